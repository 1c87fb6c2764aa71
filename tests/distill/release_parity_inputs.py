"""Deterministic inputs for the release-parity test: padded episode, model outputs, loss parameters.

The episode mask comes from the real collation under configs/reference_release.yaml
(pad_to=max_length: every row is padded to max_seq_len, beyond the longest real row). Attention
scores carry the release's -10000 at padded keys. Every loss parameter is overwritten by seeded
draws at scales that keep the graph out of its flat (uniform-weight) regime, so the domain
weights and ratios actually test the computation. The expected figures in
fixtures/release_parity.json were produced by feeding these tensors and parameters to the
authors' released code (cheneydon/hrkd: calc_total_losses in finetune_multi_domain.py,
MetaGraph in models/gnn.py) outside this repository; no code of theirs is kept here.
"""

from __future__ import annotations

import os

import torch

from hrkd_ds.config import load_config
from hrkd_ds.data.collate import collate_episode
from hrkd_ds.distill import RelationalDistillLoss
from hrkd_ds.models.encoder import EncoderOutputs

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DTYPE = torch.float64

CASES = {
    # K domains, B rows each, T = max_seq_len, widths, depths, attention heads (teacher = student), classes
    "k3": dict(K=3, B=2, T=8, Hs=6, Ht=10, Ls=2, Lt=4, heads=2, C=3, seed=11),
    "k5": dict(K=5, B=3, T=12, Hs=8, Ht=16, Ls=3, Lt=6, heads=4, C=2, seed=12),
}


def reference_config(case: dict):
    """configs/reference_release.yaml at the case's max_seq_len, graph dropout off (determinism)."""
    return load_config(os.path.join(ROOT, "configs", "reference_release.yaml"),
                       [f"data.max_seq_len={case['T']}", "graph.dropout=0.0"])


def episode_mask(case: dict, cfg, gen: torch.Generator) -> torch.Tensor:
    """(K*B, T) attention mask from collate_episode; real lengths stay below T - 1."""
    from datasets import Dataset

    K, B, T = case["K"], case["B"], case["T"]
    parts = []
    for _ in range(K):
        lengths = torch.randint(2, T - 1, (B,), generator=gen).tolist()
        parts.append(Dataset.from_dict({
            "input_ids": [[7] * n for n in lengths], "attention_mask": [[1] * n for n in lengths],
            "token_type_ids": [[0] * n for n in lengths], "label": [0] * B,
        }))  # fmt: skip
    batch = collate_episode(parts, [list(range(B))] * K, pad_id=0, pad_to=cfg.data.pad_to, max_seq_len=cfg.data.max_seq_len)
    return batch["attention_mask"]


def outputs(mask, layers, width, heads, C, K, gen, requires_grad) -> EncoderOutputs:
    """Random outputs; hidden states get a per-domain offset so the prototypes differ."""
    N, T = mask.shape
    B = N // K

    def states():
        x = torch.randn(N, T, width, generator=gen, dtype=DTYPE)
        x = x + torch.randn(K, 1, 1, width, generator=gen, dtype=DTYPE).expand(K, B, 1, width).reshape(N, 1, width)
        return x.requires_grad_(requires_grad)

    def scores():  # the release's BertAttention: raw scores + (padded key) * -10000
        a = 2.0 * torch.randn(N, heads, T, T, generator=gen, dtype=DTYPE)
        return (a - 10000.0 * (1 - mask[:, None, None, :].to(DTYPE))).requires_grad_(requires_grad)

    logits = torch.randn(N, C, generator=gen, dtype=DTYPE).requires_grad_(requires_grad)
    return EncoderOutputs(logits=logits, all_logits=logits, embeddings=states(),
                          hidden_states=tuple(states() for _ in range(layers)), attentions=tuple(scores() for _ in range(layers)))


# std of the seeded draws by parameter name prefix (D = teacher width, O = head width): large
# enough that the domain weights move well away from 1/K (about 0.18..0.40 here)
PARAM_SCALES = {
    "projections": lambda D, O, H, Hs: Hs**-0.5, "graph.U": lambda D, O, H, Hs: 1.0 / D,
    "graph.V": lambda D, O, H, Hs: 1.0 / D, "graph.W1": lambda D, O, H, Hs: D**-0.5,
    "graph.a1": lambda D, O, H, Hs: 5 * O**-0.5, "graph.W2": lambda D, O, H, Hs: 10 * (H * O) ** -0.5,
    "graph.a2": lambda D, O, H, Hs: 1.0,
}


def fill_params(loss, case: dict, gen: torch.Generator) -> None:
    """Overwrite every loss parameter (sorted by name) with seeded normal draws."""
    g = loss.params.graph
    dims = (case["Ht"], g.hidden_per_head, g.heads, case["Hs"])
    with torch.no_grad():
        for name, p in sorted(loss.params.named_parameters()):
            scale = next(f(*dims) for prefix, f in PARAM_SCALES.items() if name.startswith(prefix))
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=DTYPE))
        # On a complete graph, output-layer scores a_src*Wh_i + a_dst*Wh_j of one sign for a whole
        # level give every node the same output, so weights of exactly 1/K (the usual case, see
        # docs/METHOD.md). a_dst = -a_src puts each row's scores on both sides of zero.
        g.a2_dst.copy_(-g.a2_src)


def build(name: str, loss_cls=RelationalDistillLoss, params=None):
    """(student outputs, teacher outputs, mask, loss) for one case, all float64."""
    case = CASES[name]
    cfg = reference_config(case)
    gen = torch.Generator().manual_seed(case["seed"])
    mask = episode_mask(case, cfg, gen)
    K = case["K"]
    so = outputs(mask, case["Ls"], case["Hs"], case["heads"], case["C"], K, gen, True)
    to = outputs(mask, case["Lt"], case["Ht"], case["heads"], case["C"], K, gen, False)
    loss = loss_cls(case["Hs"], case["Ht"], case["Ls"], case["Lt"], K, cfg.graph, cfg.distill.layer_map or None,
                    cfg.distill.temperature, params, normalization=cfg.distill.normalization).to(DTYPE)
    if params is None:
        fill_params(loss, case, gen)
    return so, to, mask, loss.train()

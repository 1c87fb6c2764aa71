"""ONNX export of an fp32 hrkd export: the K x C-logit model, dynamic batch and sequence axes.

Why the TorchScript exporter (`dynamo=False`; deprecated in torch 2.x, usable while torch is
pinned at 2.13, and every export's parity check would catch a change) on an eager-attention
copy, then ONNX Runtime's BERT fusions (`onnxruntime.transformers.optimizer`, Python fusions only, opt_level 0): the
fusions (Attention, EmbedLayerNormalization, BiasGelu) match this graph and not the torch.export
graph, whose attention stays separate MatMul/Softmax/Transpose nodes. Residual Add +
LayerNormalization is left unfused, in the file and in the sessions that serve it (the file's
`disabled_optimizers` names ONNX Runtime's SkipLayerNormFusion): SkipLayerNormalization measured
slower than the two ops it replaces. Measured side by side (tools/bench_onnx.py,
docs/BENCHMARKS.md "Serving"), this graph is the fastest of the four at both of the grid's
shapes; the torch.export graph was slower than PyTorch at batch 32. The fused Attention reads
the mask as per-row lengths, so it is applied only to BERT-layout models whose tokenizer pads on
the right; anything else is exported unfused, with ONNX Runtime's defaults. The attention mask's
Python branches are traced on a batch with a padded row, and every export is checked against
PyTorch on real examples (hrkd_ds/export_onnx.py) before it is kept.

The graph takes `input_ids`, `attention_mask` (and `token_type_ids` where the model has token
types) and returns `logits` (N, K*C), domain-major like the Hugging Face model; the row's domain
slice is picked by the caller (models/onnx_model.py), as `config.id2label` says.

The file carries what serving needs (metadata_props): domains, labels, the trained max_seq_len,
the position limit, the fusions applied, the session optimizers to leave off and the tokenizer's
files, so one .onnx is a whole deployable model.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from hrkd_ds.models.loading import Export
from hrkd_ds.models.onnx_model import META_PREFIX, SKIP_LAYER_NORM_FUSION, require

ONNX_OPSET = 17  # the TorchScript exporter's best-tested opset for BERT graphs
FUSED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta")  # the layout ORT's "bert" fusions match


class AllLogits(nn.Module):
    """The HF classifier's (N, K*C) logits from named tensors: the graph the file holds."""

    def __init__(self, hf: nn.Module, token_types: bool) -> None:
        super().__init__()
        self.hf, self.token_types = hf, token_types

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kw = {"token_type_ids": token_type_ids} if self.token_types else {}
        return self.hf(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kw).logits


def input_names(config) -> list[str]:
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if getattr(config, "type_vocab_size", 0) else [])


def tokenizer_files(tokenizer) -> dict[str, str]:
    """The tokenizer's saved files, base64: rebuilt beside the session at load time."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: base64.b64encode(p.read_bytes()).decode("ascii") for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def metadata(export: Export, fusions: dict[str, int]) -> dict[str, str]:
    cfg = export.model.config
    fields = {"format": 1, "domains": export.domains, "labels": export.labels, "max_seq_len": export.max_seq_len,
              "max_positions": cfg.max_position_embeddings, "role": export.meta.get("role", "model"),
              "inputs": input_names(cfg), "fusions": fusions,
              "disabled_optimizers": [SKIP_LAYER_NORM_FUSION] if fusions else [],  # measured only on the fused graph
              "tokenizer": tokenizer_files(export.tokenizer)}
    return {META_PREFIX + k: json.dumps(v) for k, v in fields.items()}


def example_inputs(config, names: list[str], batch: int, length: int) -> tuple[torch.Tensor, ...]:
    """What an export traces: random in-vocab ids, one row half padding (tools/bench_onnx.py too)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length // 2:] = 0  # a padded row: the mask path is traced, not a full-mask shortcut
    return (ids, mask) + ((torch.zeros_like(ids),) if "token_type_ids" in names else ())


def fusable(export: Export) -> bool:
    """BERT layout and right padding: what the fused Attention's per-row lengths assume."""
    cfg = export.model.config
    return cfg.model_type in FUSED_MODEL_TYPES and getattr(export.tokenizer, "padding_side", "right") == "right"


def trace(hf: nn.Module, out: Path) -> None:
    """TorchScript export of an eager-attention copy of `hf` (the caller's model is left as it is)."""
    twin = copy.deepcopy(hf).eval()
    twin.set_attn_implementation("eager")
    cfg = twin.config
    names = input_names(cfg)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    quiet = logging.getLogger("torch.onnx")  # registry notes are not ours to show
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            example = example_inputs(cfg, names, 3, min(cfg.max_position_embeddings, 16))
            torch.onnx.export(AllLogits(twin, "token_type_ids" in names), example, str(out), input_names=names,
                              output_names=["logits"], dynamic_axes=axes, opset_version=ONNX_OPSET, dynamo=False,
                              do_constant_folding=True)
    finally:
        quiet.setLevel(level)


def fuse(path: Path, cfg, skip_layer_norm: bool = False):
    """ONNX Runtime's BERT fusions on a traced graph: (model proto, {fused op: count}).
    `skip_layer_norm` False (the export's choice, tools/bench_onnx.py) leaves residual Add +
    LayerNormalization unfused."""
    optimizer = require("onnxruntime.transformers.optimizer")
    options = require("onnxruntime.transformers.fusion_options").FusionOptions("bert")
    options.enable_skip_layer_norm = skip_layer_norm
    fusion_log = logging.getLogger("onnxruntime.transformers")
    level = fusion_log.level
    fusion_log.setLevel(logging.ERROR)
    try:
        fused = optimizer.optimize_model(str(path), model_type="bert", num_heads=cfg.num_attention_heads,
                                         hidden_size=cfg.hidden_size, opt_level=0, optimization_options=options)
    finally:
        fusion_log.setLevel(level)
    return fused.model, {k: v for k, v in sorted(fused.get_fused_operator_statistics().items()) if v}


def export_onnx(export: Export, out: str | Path) -> Path:
    """Write the fp32 model of `export` to `out` (.onnx, one file, no external data), fused where it can be."""
    if export.precision != "fp32":
        raise ValueError("ONNX export takes the fp32 model")
    onnx = require("onnx")
    require("onnxscript")  # torch.onnx imports it
    hf = export.model.hf_model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        traced = Path(tmp) / "traced.onnx"
        trace(hf, traced)
        proto, fusions = fuse(traced, hf.config) if fusable(export) else (onnx.load(str(traced)), {})
    for key, value in metadata(export, fusions).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save_model(proto, str(out), save_as_external_data=False)
    return Path(out)

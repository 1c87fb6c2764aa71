"""ONNX export of an fp32 hrkd export: the K x C-logit model, dynamic batch and sequence axes.

Why torch.export's exporter (`dynamo=True`, torch 2.13's default; needs onnxscript): the
TorchScript exporter it replaced is deprecated and traces the attention mask's Python branches
into constants. The graph takes `input_ids`, `attention_mask` (and `token_type_ids` where the
model has token types) and returns `logits` (N, K*C), domain-major like the Hugging Face model;
the row's domain slice is picked by the caller (models/onnx_model.py), as `config.id2label` says.

The file carries what serving needs (metadata_props): domains, labels, the trained max_seq_len,
the position limit, and the tokenizer's files, so one .onnx is a whole deployable model.
"""

from __future__ import annotations

import base64
import json
import logging
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from hrkd_ds.models.loading import Export
from hrkd_ds.models.onnx_model import META_PREFIX, require

ONNX_OPSET = 18


class _AllLogits(nn.Module):
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


def metadata(export: Export) -> dict[str, str]:
    cfg = export.model.config
    fields = {"format": 1, "domains": export.domains, "labels": export.labels, "max_seq_len": export.max_seq_len,
              "max_positions": cfg.max_position_embeddings, "role": export.meta.get("role", "model"),
              "inputs": input_names(cfg), "tokenizer": tokenizer_files(export.tokenizer)}
    return {META_PREFIX + k: json.dumps(v) for k, v in fields.items()}


def _example(config, names: list[str], batch: int, length: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length // 2:] = 0  # a padded row: the mask path is traced, not a full-mask shortcut
    return (ids, mask) + ((torch.zeros_like(ids),) if "token_type_ids" in names else ())


def export_onnx(export: Export, out: str | Path) -> Path:
    """Write the fp32 model of `export` to `out` (.onnx, one file, no external data)."""
    if export.precision != "fp32":
        raise ValueError("ONNX export takes the fp32 model")
    require("onnxscript")  # torch.onnx's exporter imports it
    hf = export.model.hf_model.eval()
    cfg = hf.config
    names = input_names(cfg)
    length = min(cfg.max_position_embeddings, 16)
    batch_dim = torch.export.Dim("batch", min=1, max=4096)
    seq_dim = torch.export.Dim("sequence", min=1, max=cfg.max_position_embeddings)
    shapes = {n: {0: batch_dim, 1: seq_dim} for n in names}
    quiet = logging.getLogger("torch.onnx")  # registry notes (e.g. torchvision ops absent) are not ours to show
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(_AllLogits(hf, "token_type_ids" in names), _example(cfg, names, 3, length),
                                        input_names=names, output_names=["logits"], dynamic_shapes=shapes,
                                        opset_version=ONNX_OPSET, dynamo=True, optimize=True, verbose=False)
    finally:
        quiet.setLevel(level)
    program.model.metadata_props.update(metadata(export))
    program.save(str(out), external_data=False)
    return Path(out)

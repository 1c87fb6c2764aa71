"""Serving an .onnx file written by `hrkd-export-onnx` with ONNX Runtime (CPU).

The file is self-contained (engine/onnx_export.py): domains, labels, lengths and the tokenizer
are in its metadata, so `hrkd-predict OUT.onnx data.csv` needs nothing beside it. A file without
that metadata (another model's .onnx) is refused with one line.
"""

from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrkd_ds.errors import UserError

META_PREFIX = "hrkd_"
_REQUIRED = ("domains", "labels", "max_positions", "inputs", "tokenizer")


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def require(module: str):
    """An optional dependency of the `onnx` extra, or one line saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{module} is not installed: pip install 'hrkd-ds[onnx]' (onnx, onnxruntime, onnxscript)") from None


SKIP_LAYER_NORM_FUSION = "SkipLayerNormFusion"  # ONNX Runtime's session-level residual + LayerNorm fusion


def session(path: str | Path, threads: int | None = None, disabled: tuple[str, ...] | list[str] = ()):
    """An ONNX Runtime CPU session (`threads`: intra-op threads, None = its default; `disabled`:
    session-level optimizers to leave out, as the file's metadata asks: engine/onnx_export.py)."""
    ort = require("onnxruntime")

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: the console is for our one-line messages
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled))


def _tokenizer(files: dict[str, str]):
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / Path(name).name).write_bytes(base64.b64decode(data))
        return AutoTokenizer.from_pretrained(tmp, local_files_only=True)


@dataclass
class OnnxExport:
    """An hrkd .onnx file, loaded: the session and what its metadata records."""

    session: Any
    tokenizer: Any
    domains: list[str]
    labels: list[str]
    max_seq_len: int | None
    max_positions: int
    inputs: list[str]
    path: Path
    fusions: dict[str, int]  # ONNX Runtime fusions applied at export (engine/onnx_export.py)
    precision: str = "onnx"

    def all_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, K*C) logits of one padded batch (the trainer's encoding, models' input names)."""
        feed = {n: batch[n].cpu().numpy().astype(np.int64) for n in self.inputs}
        return torch.from_numpy(self.session.run(["logits"], feed)[0])

    def domain_logits(self, batch: dict[str, torch.Tensor], domain_ids: torch.Tensor) -> torch.Tensor:
        """(N, C): each row's own domain slice, as MultiDomainClassifier returns it."""
        logits = self.all_logits(batch).view(-1, len(self.domains), len(self.labels))
        return logits[torch.arange(logits.shape[0]), domain_ids.cpu()]


def load_onnx_export(path: str | Path, threads: int | None = None) -> OnnxExport:
    """An hrkd .onnx file, or one UserError line naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX file not found: {path}")
    require("onnxruntime")
    onnx = require("onnx")
    try:  # the metadata first (no session yet), so the session is built once, with the optimizers it names off
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception as err:  # a file that is not an ONNX model: protobuf's own exception types
        raise UserError(f"{path}: cannot load it with ONNX Runtime: {_first_line(err)}") from None
    missing = [k for k in _REQUIRED if META_PREFIX + k not in props]
    if missing:
        raise UserError(f"{path}: not an hrkd ONNX export (no {META_PREFIX}{missing[0]} metadata); write one with hrkd-export-onnx")
    try:
        meta = {k[len(META_PREFIX):]: json.loads(v) for k, v in props.items() if k.startswith(META_PREFIX)}
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: hrkd metadata is not valid JSON ({err.msg})") from None
    try:  # disabled_optimizers: the ones the export measured slower (engine/onnx_export.py)
        sess = session(path, threads, [str(name) for name in meta.get("disabled_optimizers") or ()])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
        raise UserError(f"{path}: cannot load it with ONNX Runtime: {_first_line(err)}") from None
    graph_inputs = {i.name for i in sess.get_inputs()}
    if not set(meta["inputs"]) <= graph_inputs or [o.name for o in sess.get_outputs()] != ["logits"]:
        raise UserError(f"{path}: its graph's inputs/outputs are not the ones its hrkd metadata names")
    try:
        tok = _tokenizer(meta["tokenizer"])
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot rebuild its tokenizer: {_first_line(err)}") from None
    return OnnxExport(sess, tok, list(meta["domains"]), list(meta["labels"]), meta.get("max_seq_len"),
                      int(meta["max_positions"]), list(meta["inputs"]), path, dict(meta.get("fusions", {})))

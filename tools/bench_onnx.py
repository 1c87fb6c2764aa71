"""CPU latency of an exported BERT-layout model under PyTorch and ONNX Runtime, by fusion setting,
side by side: which ONNX graph hrkd-export-onnx should write (hrkd_ds/engine/onnx_export.py).

Per shape (--shapes LxH,...: layers x hidden, 12 heads, FFN 4H, random weights: latency depends on
the shape, not the values), the model is traced once and three ONNX graphs are made from it:
`unfused` (the trace as it is; ONNX Runtime applies its own session-level fusions), `fused`
(ONNX Runtime's BERT fusions: Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu)
and `fused, no SkipLN` (the same without SkipLayerNormalization, here and at session level); beside
them, the torch.export (`dynamo=True`) graph hrkd-export-onnx wrote before, which these fusions
do not match.
Each is checked against PyTorch on a padded batch (max |logit diff|), then every runtime is timed
in turn within each repeat (engine/compression.side_by_side_ms: the compression report's inputs,
1 thread by default), so the ratios are side by side. Ratios are against PyTorch fp32 with
Hugging Face's default attention (sdpa), the stronger of the two PyTorch paths.

    python3 tools/bench_onnx.py [--shapes 4x192,6x384] [--batch-sizes 1,32] [--repeats 15]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from transformers import BertConfig, BertForSequenceClassification

from hrkd_ds.engine.compression import side_by_side_ms, timing_inputs
from hrkd_ds.engine.onnx_export import ONNX_OPSET, AllLogits, example_inputs, fuse, input_names, trace
from hrkd_ds.models.attention import register_attention
from hrkd_ds.models.onnx_model import SKIP_LAYER_NORM_FUSION, session

VARIANTS = {"unfused": None, "fused": True, "fused, no SkipLN": False}  # fuse()'s skip_layer_norm, None = no fuse
BEFORE = "torch.export graph (the export before this bench)"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="4x192,6x384", help="layers x hidden, comma-separated")
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p.parse_args(argv)


def random_bert(layers: int, hidden: int, seq_len: int) -> BertForSequenceClassification:
    cfg = BertConfig(vocab_size=8000, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=12,
                     intermediate_size=4 * hidden, max_position_embeddings=seq_len, num_labels=8)
    torch.manual_seed(0)
    return BertForSequenceClassification(cfg).eval()


def graphs(hf, tmp: Path, threads: int) -> dict[str, object]:
    """The three ONNX Runtime sessions of one traced model."""
    traced = tmp / "traced.onnx"
    trace(hf, traced)
    out = {}
    for name, skip in VARIANTS.items():
        path = traced
        if skip is not None:
            proto, _ = fuse(traced, hf.config, skip_layer_norm=skip)
            path = tmp / f"{name.replace(', ', '-').replace(' ', '_')}.onnx"
            onnx.save_model(proto, str(path))
        out[name] = session(path, threads, disabled=() if skip is not False else (SKIP_LAYER_NORM_FUSION,))
    before = tmp / "dynamo.onnx"  # exported from a copy: torch.export leaves the model it traces ~8% slower
    names = input_names(hf.config)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # registry notes (torchvision absent)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        dim = {0: torch.export.Dim("batch", min=1, max=4096),
               1: torch.export.Dim("sequence", min=1, max=hf.config.max_position_embeddings)}
        example = example_inputs(hf.config, names, 3, min(16, hf.config.max_position_embeddings))
        program = torch.onnx.export(AllLogits(copy.deepcopy(hf), "token_type_ids" in names), example,
                                    input_names=names, output_names=["logits"], dynamic_shapes={n: dim for n in names},
                                    opset_version=18, dynamo=True, optimize=True, verbose=False)
    program.save(str(before), external_data=False)
    out[BEFORE] = session(before, threads)
    return out


def parity(hf, sessions: dict[str, object]) -> dict[str, float]:
    """Max |logit diff| to PyTorch on a batch whose rows have different lengths (right padding)."""
    length = min(24, hf.config.max_position_embeddings)
    ins = timing_inputs(hf.config, 4, length, seed=1)
    for row, keep in enumerate((length, 2 * length // 3, length // 3, 2)):
        ins["attention_mask"][row, keep:] = 0
    with torch.no_grad():
        ref = hf(**ins).logits
    feed = {k: v.numpy() for k, v in ins.items()}
    return {name: float(np.abs(s.run(["logits"], {i.name: feed[i.name] for i in s.get_inputs()})[0] - ref.numpy()).max())
            for name, s in sessions.items()}


def measure(shape: str, args: argparse.Namespace) -> dict[str, object]:
    layers, hidden = (int(x) for x in shape.lower().split("x"))
    hf = random_bert(layers, hidden, args.seq_len)
    trainer = copy.deepcopy(hf)
    trainer.set_attn_implementation(register_attention())
    hf.set_attn_implementation("sdpa")
    with tempfile.TemporaryDirectory() as tmp:
        sessions = graphs(hf, Path(tmp), args.threads)
        diffs = parity(hf, sessions)
        latency = {}
        for b in (int(x) for x in args.batch_sizes.split(",")):
            ins = timing_inputs(hf.config, b, args.seq_len)
            feed = {k: v.numpy() for k, v in ins.items()}
            runs = {"PyTorch fp32 (sdpa)": lambda: hf(**ins), "PyTorch fp32 (trainer's attention)": lambda: trainer(**ins)}
            for name, s in sessions.items():
                runs[f"ONNX Runtime, {name}"] = lambda s=s: s.run(["logits"], {i.name: feed[i.name] for i in s.get_inputs()})
            with torch.inference_mode():
                latency[str(b)] = side_by_side_ms(runs, args.repeats, args.warmup)
    return {"shape": shape, "max_abs_logit_diff": diffs, "latency_ms": latency}


def table(results: list[dict[str, object]]) -> str:
    lines = ["| shape | batch | runtime | ms (median) | speed vs PyTorch sdpa | max logit diff |", "|---|---|---|---|---|---|"]
    for r in results:
        for b, ms in r["latency_ms"].items():
            base = ms["PyTorch fp32 (sdpa)"]
            for name, v in ms.items():
                diff = r["max_abs_logit_diff"].get(name.removeprefix("ONNX Runtime, "), None)
                lines.append(f"| {r['shape']} | {b} | {name} | {v:.1f} | {base / v:.2f}x | "
                             f"{'' if diff is None else f'{diff:.1e}'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    results = [measure(s, args) for s in args.shapes.split(",")]
    print(f"CPU, {args.threads} thread(s), seq len {args.seq_len}, median of {args.repeats}, side by side; "
          f"opset {ONNX_OPSET}, onnxruntime {__import__('onnxruntime').__version__}")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

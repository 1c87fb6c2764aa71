"""A random-weight BERT-shaped teacher export, written shard by shard (no hub, no full model in memory).

Big-teacher benchmarks need a teacher larger than one process can comfortably hold; building it
with `build_model` and `save_pretrained` would hold it whole. Here the parameter names and shapes
come from the model built on the meta device, each tensor is drawn, written into a shard of at
most `shard_bytes`, and dropped. The directory is reused when its manifest (shape key + sha256 of
every file) still matches, so a rerun does not rewrite gigabytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification, BertConfig

from hrkd_ds.data.checked_cache import file_sha256
from hrkd_ds.models.encoder import annotate_config

MANIFEST = "bench_manifest.json"


def teacher_config(layers: int, hidden: int, intermediate: int, vocab: int, positions: int, domains: int,
                   classes: int) -> BertConfig:
    """The trainer's BERT config for a random teacher (models/build.build_model's branch)."""
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                     intermediate_size=intermediate, max_position_embeddings=positions, type_vocab_size=2, pad_token_id=0,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    annotate_config(cfg, [f"domain{i}" for i in range(domains)], [f"label{i}" for i in range(classes)])
    return cfg




def _key(cfg: BertConfig) -> dict:
    return {k: getattr(cfg, k) for k in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size",
                                         "max_position_embeddings", "num_labels")}


def is_valid(where: Path, cfg: BertConfig) -> bool:
    """The cached export matches this shape and every file its recorded checksum."""
    try:
        manifest = json.loads((where / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if manifest.get("key") != _key(cfg):
        return False
    return all((where / name).is_file() and file_sha256(where / name) == digest for name, digest in manifest["files"].items())


def _draw(name: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    if name.endswith("LayerNorm.weight"):
        return torch.ones(shape)
    if name.endswith("bias") or name.endswith("LayerNorm.bias"):
        return torch.zeros(shape)
    return torch.empty(shape).normal_(0.0, 0.02, generator=gen)


def write(where: Path, cfg: BertConfig, shard_bytes: int = 1 << 29, seed: int = 0) -> int:
    """Write config.json + model-0000k.safetensors shards + the manifest; returns the parameter count."""
    where.mkdir(parents=True, exist_ok=True)
    for old in where.glob("*.safetensors"):
        old.unlink()
    with torch.device("meta"):
        shapes = [(n, p.shape) for n, p in AutoModelForSequenceClassification.from_config(cfg).named_parameters()]
    gen = torch.Generator().manual_seed(seed)
    shard, size, files, total = {}, 0, [], 0
    for i, (name, shape) in enumerate(shapes):
        shard[name] = _draw(name, shape, gen)
        size += shard[name].numel() * 4
        total += shard[name].numel()
        if size >= shard_bytes or i == len(shapes) - 1:
            files.append(f"model-{len(files):05d}.safetensors")
            save_file(shard, str(where / files[-1]), metadata={"format": "pt"})
            shard, size = {}, 0
    cfg.save_pretrained(where)
    digests = {name: file_sha256(where / name) for name in [*files, "config.json"]}
    (where / MANIFEST).write_text(json.dumps({"key": _key(cfg), "params": total, "files": digests}, indent=1))
    return total


def ensure(where: Path, cfg: BertConfig) -> tuple[int, bool]:
    """(parameter count, reused?): the cached export when valid, else a fresh one."""
    if is_valid(where, cfg):
        return json.loads((where / MANIFEST).read_text())["params"], True
    return write(where, cfg), False

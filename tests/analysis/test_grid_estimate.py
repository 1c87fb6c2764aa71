"""The time left is estimated only from recorded costs of finished cells of the same kind."""

from __future__ import annotations

import json

from hrkd_ds.analysis.grid_estimate import estimate, estimate_line, kind_of


def _timing(root, cell_id, *attempts):
    d = root / cell_id
    d.mkdir(parents=True)
    (d / "timing.json").write_text(json.dumps({"attempts": [{"rc": rc, "wall_s": w, "cpu_s": 2 * w} for rc, w in attempts]}))


def test_a_pending_cell_costs_the_median_of_its_finished_seeds_and_an_untimed_kind_is_not_guessed(tmp_path):
    live, archive = tmp_path / "live", tmp_path / "archive"
    _timing(archive, "amazon/f0.1/L3/kd/s1", (0, 100.0))
    _timing(archive, "amazon/f0.1/L3/kd/s2", (3, 150.0), (0, 150.0))  # resumed once: 300 s in all
    _timing(live, "amazon/f0.1/L3/kd/s3", (0, 200.0))
    _timing(live, "amazon/f0.1/L3/kd/s4", (3, 9999.0))  # still running: no cost yet
    (archive / "amazon/f0.1/L3/kd/s5").mkdir(parents=True)  # no record (archived before timing existed)
    pending = ["amazon/f0.1/L3/kd/s4", "amazon/f0.1/L3/kd/s6", "amazon/f1.0/teacher", "amazon/f1.0/L3/kd/s1"]
    e = estimate(pending, [live, archive])
    assert e["known"] == 2 and e["known_s"] == 2 * 200.0  # median of 100, 300, 200
    assert e["unknown"] == ["amazon/f1.0/teacher", "amazon/f1.0/L3/kd/s1"]  # another fraction is another kind
    assert estimate_line(pending, [live, archive]) == ("left: 4 cells; 2 of kinds already timed, about 0.1 h wall at "
                                                       "their medians; 2 more, of 2 kinds not timed yet")
    assert estimate_line(pending[2:], [live, archive]) == "left: 2 cells, none of a kind already timed"
    assert estimate_line([], [live, archive]) == "left: none"


def test_the_kind_of_a_cell_is_its_id_without_the_seed():
    assert kind_of("mnli/f0.1/L4H192sel/logit-kd-aug/s12") == "mnli/f0.1/L4H192sel/logit-kd-aug"
    assert kind_of("amazon/f1.0/general-L4H192") == "amazon/f1.0/general-L4H192"

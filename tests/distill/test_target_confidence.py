"""The soft targets' entropy and the warning a nearly uniform teacher gets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hrkd_ds.distill.target_confidence import NEAR_UNIFORM, confidence_warning, soft_target_entropy


def test_entropy_is_one_for_equal_logits_and_matches_a_hand_computed_row():
    assert soft_target_entropy([np.zeros((4, 3)), np.full((2, 3), 7.0)]) == pytest.approx(1.0)
    p = np.array([0.7, 0.2, 0.1])
    rows = [np.log(p)[None, :]]
    assert soft_target_entropy(rows) == pytest.approx(-(p * np.log(p)).sum() / math.log(3))
    # a higher temperature flattens the same logits
    z = [np.array([[4.0, 0.0], [0.0, 3.0]])]
    assert soft_target_entropy(z, 4.0) > soft_target_entropy(z, 1.0)


def test_the_warning_names_the_entropy_only_above_the_threshold():
    assert confidence_warning(NEAR_UNIFORM, 1.0) is None and confidence_warning(0.3, 1.0) is None
    line = confidence_warning(0.98, 4.0)
    assert line.startswith("[hrkd] warning: the teacher's soft targets are nearly uniform (mean entropy 0.98")
    assert "tau 4" in line and "distill.method=kd" in line


def test_no_classes_is_an_error_not_a_number():
    with pytest.raises(ValueError, match="at least 2 class logits"):
        soft_target_entropy([np.zeros((3, 1))])

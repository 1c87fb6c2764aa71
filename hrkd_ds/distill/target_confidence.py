"""How much a teacher's soft targets can teach: their mean entropy, read before a logit-only run trains.

Why: a logit-only recipe (logit-kd, its cached form) learns only what the teacher's distribution
over classes says. When that distribution is nearly uniform for every row, the KL term pulls the
student towards "every class alike" and the labels' CE is all that is left. On MNLI 10% the
grid's teacher (48.5% test) gave exactly that, entropy 0.97-0.99 of log 3 per domain, and
`logit-kd-aug` fell 7.49 points below layer-wise `kd` (docs/RESULTS.md); on Amazon, entropy
0.28-0.42 of log 2, it was the best recipe on dev. So the run says so, once, before training.

H = mean over rows of -sum_c p_c log p_c / log C, p = softmax(z / tau) (docs/METHOD.md, "Recipes").
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

NEAR_UNIFORM = 0.9  # H above this: the soft targets say little beyond "uniform" (MNLI 0.97-0.99, Amazon <= 0.42)


def soft_target_entropy(logits: Sequence[np.ndarray], temperature: float = 1.0) -> float:
    """H of the soft targets of every row (all domains' arrays together), in [0, 1]."""
    z = np.concatenate([np.asarray(a, dtype=np.float64) for a in logits]) / float(temperature)
    if z.ndim != 2 or z.shape[1] < 2 or not len(z):
        raise ValueError("soft targets need rows of at least 2 class logits")
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    h = -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)
    return float(h.mean() / math.log(z.shape[1]))


def confidence_warning(entropy: float, temperature: float) -> str | None:
    """One line when the soft targets are nearly uniform, None otherwise."""
    if entropy <= NEAR_UNIFORM:
        return None
    return (f"[hrkd] warning: the teacher's soft targets are nearly uniform (mean entropy {entropy:.2f} of the "
            f"maximum at tau {temperature:g}): a logit-only loss has little to learn from them; layer-wise terms "
            "(distill.method=kd) did better where this happened (docs/RESULTS.md, MNLI 10%)")

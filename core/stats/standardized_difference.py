"""Standardized differences between patient subsets: balance without p-values.

STARD 2015 item 20 and TRIPOD+AI item 20 ask for the characteristics of the patients in
each data set. With 104 / 17 / 20 patients a p-value mostly measures sample size, so the
difference is reported standardized (Austin, Commun Stat Simul Comput 2009): for a
continuous variable ``(m1 − m2) / sqrt((s1² + s2²) / 2)``, for a proportion
``(p1 − p2) / sqrt((p1(1 − p1) + p2(1 − p2)) / 2)``. An absolute value above 0.1 is the
usual flag for imbalance.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

IMBALANCE = 0.1
"""|d| above this is commonly read as a meaningful imbalance (Austin 2009)."""


def continuous(a: ArrayLike, b: ArrayLike) -> float:
    """Standardized mean difference of two samples (NaN when undefined: empty or no spread)."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size < 2 or y.size < 2:
        return math.nan
    pooled = math.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2)
    return float((x.mean() - y.mean()) / pooled) if pooled > 0 else math.nan


def binary(a: ArrayLike, b: ArrayLike) -> float:
    """Standardized difference of two proportions given as 0/1 samples (NaN when undefined)."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        return math.nan
    p1, p2 = x.mean(), y.mean()
    pooled = math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / 2)
    return float((p1 - p2) / pooled) if pooled > 0 else math.nan

"""A synthetic demo cohort whose marginals match the study (Yi et al., Sci Rep 2022).

The real images and CT measurements cannot ship with the app, so the demo runs on 160
invented patients with the study's figures: 62 men and 98 women, echogenicity grades
27/84/39/10, 141 eligible CTs (56 men, 85 women), 29 with sarcopenia (22 men, 7 women), and
the 19 exclusions with their reasons (16 without CT within a month, 1 without body weight,
2 with surgical hardware at L3).

One latent muscle-quality score per patient (a z-score, higher = healthier) drives the
skeletal muscle index, the echogenicity grade and the shear-wave stiffness, each with its
own noise. A model can therefore learn sarcopenia from the images, but not perfectly, as
in the study. Other cohort sizes keep the same proportions (benchmarks use 10,000).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from core.common.labels import (
    CT_WINDOW_DAYS,
    EXCLUSION_HARDWARE_L3,
    EXCLUSION_NO_CT,
    EXCLUSION_NO_WEIGHT,
    SMI_CUTOFF_MEN,
    SMI_CUTOFF_WOMEN,
)

SMI_CUTOFF_CM2_M2 = {"M": SMI_CUTOFF_MEN, "F": SMI_CUTOFF_WOMEN}

STUDY_N = 160
GRADE_COUNTS = (27, 84, 39, 10)
"""Echogenicity grades 0–3 in the study's 160 patients."""

# Per sex: ultrasound count, age range and mean (study text).
_SEX_N = {"M": 62, "F": 98}
_AGE = {"M": (21, 87, 57.4), "F": (24, 85, 56.4)}
# Per sex: eligible, no CT within 30 days, no weight, hardware at L3. The study gives the
# totals (141 = 56 M + 85 F; 16, 1, 2); the split of the 19 exclusions by sex is ours.
_CT_GROUPS = {"M": (56, 5, 0, 1), "F": (85, 11, 1, 1)}
# Sarcopenic among eligible, per sex (study: 22 men, 7 women).
_SARCOPENIC = {"M": 22, "F": 7}
# Plausible SMI distributions (cm²/m²) of hospital patients; chosen so that the cutoffs
# split them in about the study's proportions.
_SMI_MEAN_SD = {"M": (51.5, 7.0), "F": (39.5, 6.0)}
# Korean adult height (cm) and BMI (kg/m²) by sex.
_HEIGHT_MEAN_SD = {"M": (169.0, 6.0), "F": (156.0, 5.5)}
_BMI_MEAN_SD = {"M": (23.6, 3.0), "F": (23.2, 3.4)}

# Ultrasound dates fall inside the study's enrolment (December 2018 to July 2019).
_US_FIRST_DAY = datetime.date(2019, 1, 2)
_US_LAST_DAY = datetime.date(2019, 7, 31)

# How strongly the latent quality drives each observable (the rest is noise). Tuned so
# that true grade and SWE median reach an AUC of about 0.75–0.85 for sarcopenia.
_SMI_QUALITY_WEIGHT = 0.8
_GRADE_AGE_PER_YEAR = 0.025
_GRADE_NOISE_SD = 0.6
_SWE_LOG_MEDIAN_KPA = np.log(16.0)
_SWE_LOG_PER_GRADE = 0.16
_SWE_LOG_PER_QUALITY = -0.10
_SWE_LOG_NOISE_SD = 0.12
# Reader model: a shared perception error plus each reader's own, then rounding; gives
# linear weighted kappa ≈ 0.7 against the true grade and ≈ 28% disagreement.
_READER_SHARED_SD = 0.4
_READER_OWN_SD = 0.3


@dataclass(frozen=True)
class SyntheticPatient:
    """One invented patient: demographics, CT measurement, grades and render inputs."""

    code: str
    sex: str
    age: int
    height_cm: float
    weight_kg: float | None
    us_date: datetime.date
    ct_date: datetime.date | None
    l3_sma_cm2: float | None
    exclusion_reason: str | None
    true_grade: int
    reader_grades: tuple[int, int]
    quality: float
    swe_median_kpa: float
    seed: int


def _scaled_counts(counts: tuple[int, ...], total: int) -> list[int]:
    """Largest-remainder rounding of ``counts`` rescaled to sum to ``total``."""
    weights = np.asarray(counts, dtype=float)
    raw = weights / weights.sum() * total
    out = np.floor(raw).astype(int)
    order = np.argsort(-(raw - out), kind="stable")
    out[order[: total - int(out.sum())]] += 1
    return [int(c) for c in out]


def _ages(rng: np.random.Generator, n: int, lo: int, hi: int, mean: float) -> np.ndarray:
    """Integer ages in [lo, hi] with both ends present (when n ≥ 2) and the given mean."""
    if n == 0:
        return np.zeros(0, dtype=int)
    ages = np.clip(np.rint(rng.normal(mean, 14.0, n)), lo, hi).astype(int)
    if n >= 2:
        ends = rng.choice(n, size=2, replace=False)
        ages[ends] = (lo, hi)
        movable = np.setdiff1d(np.arange(n), ends)
    else:
        movable = np.arange(n)
    deficit = round(mean * n) - int(ages.sum())
    # Nudge free ages one year at a time until the sum (hence the mean) is on target.
    while deficit != 0 and movable.size:
        step = 1 if deficit > 0 else -1
        room = movable[(ages[movable] + step >= lo + 1) & (ages[movable] + step <= hi - 1)]
        if room.size == 0:
            break
        pick = rng.choice(room, size=min(abs(deficit), room.size), replace=False)
        ages[pick] += step
        deficit -= step * pick.size
    return ages


def _rank_assign(scores: np.ndarray, counts: list[int]) -> np.ndarray:
    """Label the lowest ``counts[0]`` scores 0, the next ``counts[1]`` 1, and so on."""
    labels = np.empty(scores.size, dtype=int)
    labels[np.argsort(scores, kind="stable")] = np.repeat(np.arange(len(counts)), counts)
    return labels


def _truncated_normal(
    rng: np.random.Generator, n: int, mean: float, sd: float, lo: float, hi: float
) -> np.ndarray:
    """Inverse-CDF draws from N(mean, sd) restricted to [lo, hi]."""
    a, b = ndtr((lo - mean) / sd), ndtr((hi - mean) / sd)
    u = rng.uniform(a, b, n)
    return mean + sd * ndtri(np.clip(u, 1e-12, 1 - 1e-12))


def _smi_for_eligible(
    rng: np.random.Generator, latent: np.ndarray, sex: str, n_sarcopenic: int
) -> np.ndarray:
    """SMI values with exactly ``n_sarcopenic`` at or below the cutoff, ordered by latent."""
    mean, sd = _SMI_MEAN_SD[sex]
    cut = SMI_CUTOFF_CM2_M2[sex]
    low = _truncated_normal(rng, n_sarcopenic, mean, sd, mean - 5 * sd, cut - 0.1)
    high = _truncated_normal(rng, latent.size - n_sarcopenic, mean, sd, cut + 0.1, mean + 5 * sd)
    values = np.sort(np.concatenate([low, high]))
    out = np.empty(latent.size)
    out[np.argsort(latent, kind="stable")] = values
    return out


def synthetic_cohort(seed: int = 2022, n: int = 160) -> list[SyntheticPatient]:
    """Invent ``n`` patients with the study's marginals (exact for n = 160), deterministically.

    Raises ValueError for a negative seed or an n below 1.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer number of patients, got {n!r}.")
    n = int(n)
    rng = np.random.Generator(np.random.PCG64(seed))

    n_men, n_women = _scaled_counts((_SEX_N["M"], _SEX_N["F"]), n)
    sex = np.array(["M"] * n_men + ["F"] * n_women)
    rng.shuffle(sex)
    quality = rng.standard_normal(n)

    age = np.zeros(n, dtype=int)
    height = np.zeros(n)
    bmi = np.zeros(n)
    group = np.zeros(n, dtype=int)  # 0 eligible, 1 no CT, 2 no weight, 3 hardware
    smi = np.full(n, np.nan)
    for s in ("M", "F"):
        idx = np.flatnonzero(sex == s)
        if idx.size == 0:
            continue
        lo, hi, mean_age = _AGE[s]
        age[idx] = _ages(rng, idx.size, lo, hi, mean_age)
        h_mean, h_sd = _HEIGHT_MEAN_SD[s]
        # Older Koreans are shorter (secular trend), about 1.5 cm per decade.
        height[idx] = rng.normal(h_mean, h_sd, idx.size) - 0.15 * (age[idx] - 50)
        b_mean, b_sd = _BMI_MEAN_SD[s]
        bmi[idx] = np.clip(rng.normal(b_mean, b_sd, idx.size) + 0.8 * quality[idx], 16.0, 40.0)
        group_counts = _scaled_counts(_CT_GROUPS[s], idx.size)
        group[idx] = rng.permutation(np.repeat(np.arange(4), group_counts))

        # Lower SMI with poorer muscle quality and with age.
        latent = (
            _SMI_QUALITY_WEIGHT * quality[idx]
            - 0.012 * (age[idx] - 57)
            + np.sqrt(1 - _SMI_QUALITY_WEIGHT**2) * rng.standard_normal(idx.size)
        )
        eligible = group[idx] == 0
        n_sarc = _scaled_counts(
            (_SARCOPENIC[s], _CT_GROUPS[s][0] - _SARCOPENIC[s]), group_counts[0]
        )[0]
        smi[idx[eligible]] = _smi_for_eligible(rng, latent[eligible], s, n_sarc)
        m, sd = _SMI_MEAN_SD[s]
        smi[idx[~eligible]] = m + sd * latent[~eligible]

    # Grade: poorer quality and older age give brighter muscle; exact study counts.
    grade_score = (
        -quality + _GRADE_AGE_PER_YEAR * (age - 57) + _GRADE_NOISE_SD * rng.standard_normal(n)
    )
    true_grade = _rank_assign(grade_score, _scaled_counts(GRADE_COUNTS, n))

    shared = true_grade + rng.normal(0.0, _READER_SHARED_SD, n)
    readers = [
        np.clip(np.rint(shared + rng.normal(0.0, _READER_OWN_SD, n)), 0, 3).astype(int)
        for _ in range(2)
    ]

    swe = np.exp(
        _SWE_LOG_MEDIAN_KPA
        + _SWE_LOG_PER_GRADE * (true_grade - 1)
        + _SWE_LOG_PER_QUALITY * quality
        + _SWE_LOG_NOISE_SD * rng.standard_normal(n)
    )

    span = (_US_LAST_DAY - _US_FIRST_DAY).days
    us_offset = rng.integers(0, span + 1, n)
    ct_offset = rng.integers(0, CT_WINDOW_DAYS + 1, n)
    ct_offset[rng.random(n) < 0.05] = CT_WINDOW_DAYS  # a few on the boundary day
    far_offset = rng.integers(35, 201, n)
    ct_sign = np.where(rng.random(n) < 0.7, -1, 1)  # CT more often before the ultrasound
    no_ct_at_all = rng.random(n) < 0.25
    render_seeds = rng.integers(0, 2**31 - 1, n)

    height = np.round(height, 1)
    weight = np.round(bmi * (height / 100) ** 2, 1)
    sma = np.round(smi * (height / 100) ** 2, 1)
    reasons = (
        None,
        EXCLUSION_NO_CT,
        EXCLUSION_NO_WEIGHT,
        EXCLUSION_HARDWARE_L3,
    )

    patients: list[SyntheticPatient] = []
    for i in range(n):
        us_date = _US_FIRST_DAY + datetime.timedelta(days=int(us_offset[i]))
        g = int(group[i])
        if g == 1:
            if no_ct_at_all[i]:
                ct_date = None
            else:
                ct_date = us_date + datetime.timedelta(days=int(ct_sign[i] * far_offset[i]))
        else:
            ct_date = us_date + datetime.timedelta(days=int(ct_sign[i] * ct_offset[i]))
        patients.append(
            SyntheticPatient(
                code=f"DEMO-{i + 1:03d}",
                sex=str(sex[i]),
                age=int(age[i]),
                height_cm=float(height[i]),
                weight_kg=None if g == 2 else float(weight[i]),
                us_date=us_date,
                ct_date=ct_date,
                l3_sma_cm2=None if ct_date is None else float(sma[i]),
                exclusion_reason=reasons[g],
                true_grade=int(true_grade[i]),
                reader_grades=(int(readers[0][i]), int(readers[1][i])),
                quality=float(quality[i]),
                swe_median_kpa=float(np.round(swe[i], 2)),
                seed=int(render_seeds[i]),
            )
        )
    return patients

"""Labels derived from the measurements: always computed, never typed in.

The numbers come from Yi et al. (Sci Rep 2022), who used the KNHANES cutoffs for
sarcopenia and a one-month window between ultrasound and CT.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

SMI_CUTOFF_MEN = 49.0
"""KNHANES cutoff (cm²/m²): men with SMI at or below it are sarcopenic."""
SMI_CUTOFF_WOMEN = 31.0
"""KNHANES cutoff (cm²/m²): women with SMI at or below it are sarcopenic."""
CT_WINDOW_DAYS = 30
"""The study required CT within one month of the ultrasound."""
HIGH_GRADE_MIN = 2
"""Grades 0–1 are 'low' and 2–3 'high' echogenicity (the study's dichotomy)."""
GRADES = (0, 1, 2, 3)

EXCLUSION_NO_CT = "no CT within 30 days of ultrasound"
EXCLUSION_NO_WEIGHT = "no body-weight information"
EXCLUSION_HARDWARE_L3 = "surgical hardware at L3"


def smi(sma_cm2: float, height_cm: float) -> float:
    """Skeletal muscle index: L3 skeletal muscle area divided by height in metres squared."""
    if height_cm <= 0:
        raise ValueError(f"Height must be positive to compute SMI, got {height_cm} cm.")
    if sma_cm2 < 0:
        raise ValueError(f"L3 muscle area cannot be negative, got {sma_cm2} cm².")
    height_m = height_cm / 100.0
    return sma_cm2 / (height_m * height_m)


def is_sarcopenic(smi_value: float, sex: str) -> bool:
    """Sarcopenia by the KNHANES cutoffs: SMI ≤ 49 cm²/m² for men, ≤ 31 cm²/m² for women."""
    if sex == "M":
        return smi_value <= SMI_CUTOFF_MEN
    if sex == "F":
        return smi_value <= SMI_CUTOFF_WOMEN
    raise ValueError(f"Sex must be 'M' or 'F' to apply a sarcopenia cutoff, got {sex!r}.")


@dataclass(frozen=True, slots=True)
class CtEligibility:
    """Whether a patient's CT can label their ultrasound, and why not when it cannot."""

    eligible: bool
    interval_days: int | None
    reason: str | None


def ct_eligibility(
    us_date: dt.date | None,
    ct_date: dt.date | None,
    sma_cm2: float | None,
    recorded_reason: str | None = None,
) -> CtEligibility:
    """Apply the study's one-month window; a reason recorded by a person always wins.

    Excluded patients keep their record and their reason (the study listed 16 without CT
    within a month, 1 without body weight and 2 with hardware at L3); nothing is deleted.
    """
    interval = abs((ct_date - us_date).days) if us_date and ct_date else None
    if recorded_reason:
        return CtEligibility(False, interval, recorded_reason)
    if ct_date is None or us_date is None or sma_cm2 is None:
        return CtEligibility(False, interval, EXCLUSION_NO_CT)
    if interval is not None and interval > CT_WINDOW_DAYS:
        return CtEligibility(False, interval, EXCLUSION_NO_CT)
    return CtEligibility(True, interval, None)


def dichotomize_grade(grade: int) -> int:
    """Echogenicity grade 0–1 → 0 (low), 2–3 → 1 (high), the study's binary task."""
    if grade not in GRADES:
        raise ValueError(f"Echogenicity grade must be 0, 1, 2 or 3, got {grade!r}.")
    return int(grade >= HIGH_GRADE_MIN)


GRADE_DESCRIPTIONS = {
    0: "Low-echo muscle with the speckled look of perimysial connective tissue",
    1: "An area of increased echo relative to the background muscle",
    2: "Nearly as echogenic as perimysial fat",
    3: "Isoechoic to fat",
}
"""The study's echogenicity scale (after Heckmatt), shown beside the grade buttons."""

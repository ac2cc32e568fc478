"""The data dictionary: what each column of the labeled CSV means, and its unit."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import pandas as pd

from core.common.csv_safety import csv_text

_FIXED: Final[dict[str, tuple[str, str]]] = {
    "patient_code": ("Pseudonymous patient code (unique).", "text"),
    "sex": ("Sex; the sarcopenia cutoff is sex-specific.", "M | F"),
    "age": ("Age at ultrasound.", "years"),
    "height_cm": ("Body height.", "cm"),
    "weight_kg": ("Body weight; empty when unknown (such a patient is excluded).", "kg"),
    "us_date": ("Date of the ultrasound examination.", "YYYY-MM-DD"),
    "ct_date": ("Date of the abdominal CT used for L3 muscle area.", "YYYY-MM-DD"),
    "l3_sma_cm2": ("Skeletal muscle area on the CT slice at the inferior end plate of L3.", "cm²"),
    "exclusion_reason": (
        "Exclusion reason recorded by a person (e.g. surgical hardware at L3).",
        "text",
    ),
    "synthetic": ("yes for the synthetic demo cohort (computer-generated images).", "yes | no"),
    "ct_interval_days": ("Days between ultrasound and CT (derived).", "days"),
    "smi": ("Skeletal muscle index = L3 SMA / height² (derived).", "cm²/m²"),
    "ct_eligible": (
        "CT usable as ground truth: within 30 days of the ultrasound, SMA and weight known, "
        "no recorded exclusion (Yi et al. 2022; derived).",
        "yes | no",
    ),
    "ct_exclusion": (
        "Why the CT is not usable (recorded or derived); empty when eligible.",
        "text",
    ),
    "sarcopenia": (
        "Sarcopenia by the KNHANES cutoffs, SMI ≤ 49 (men) or ≤ 31 (women) cm²/m²; empty when "
        "the CT is not eligible (derived).",
        "yes | no",
    ),
    "consensus_grade": ("Consensus echogenicity grade of the GSU image (after Heckmatt).", "0–3"),
    "consensus_method": ("How the consensus was reached.", "agreement | adjudication"),
    "consensus_decided_by": ("Admin who adjudicated; empty for automatic agreement.", "username"),
    "echogenicity": (
        "Dichotomized consensus grade: 0–1 low, 2–3 high (the study's task).",
        "low | high",
    ),
    "gsu_feature_box": ("Box the GSU features were measured in.", "consensus | reader | auto"),
    "swe_feature_box": ("Box the SWE statistics were measured in.", "consensus | reader | auto"),
    "swe_stiffness_units": (
        "Units of the decoded stiffness (kPa when the colour scale was read).",
        "text",
    ),
}


def _describe(column: str) -> tuple[str, str]:
    if column in _FIXED:
        return _FIXED[column]
    if column.startswith("grade_"):
        return (f"Echogenicity grade given by reader {column[6:]} (blinded, own grade).", "0–3")
    if column.startswith("box_"):
        stem, coord = column.rsplit("_", 1)
        _, modality, owner = stem.split("_", 2)
        who = {"consensus": "the consensus box", "auto": "the automatic (detected) box"}.get(
            owner, f"reader {owner}'s box"
        )
        meaning = {"x": "left edge", "y": "top edge", "w": "width", "h": "height"}[coord]
        return (f"{modality.upper()} crop box, {who}: {meaning}.", "pixels of the source image")
    if column.startswith("gsu_echo_"):
        stat = column[len("gsu_echo_") :]
        name = {"mean": "mean", "sd": "standard deviation"}.get(stat, f"{stat[1:]}th percentile")
        return (
            f"Echo intensity inside the GSU box, {name} of the un-normalized gray level.",
            "gray level 0–255",
        )
    if column.startswith("swe_stiffness_"):
        stat = column[len("swe_stiffness_") :]
        if stat == "fraction_colored":
            return ("Fraction of the SWE box with a decoded stiffness value.", "0–1")
        return (f"Decoded shear-wave stiffness inside the SWE box, {stat}.", "swe_stiffness_units")
    if column.startswith("run"):
        run, what = column.split("_", 1)
        run_id = run[3:]
        texts = {
            "subset": (
                f"Subset of the patient in run {run_id}'s split (its saved model's fold).",
                "train | val | test | not in run",
            ),
            "probability": (
                f"Run {run_id}'s predicted probability of the positive class (sarcopenia or "
                "high echogenicity). On training patients it is in-sample, not a test.",
                "0–1",
            ),
            "predicted_label": (
                f"Run {run_id}'s prediction at its threshold (1 = positive).",
                "0 | 1",
            ),
            "prediction_source": (
                f"Where run {run_id}'s probability comes from: stored test or validation "
                "prediction, or the cohort prediction job.",
                "test | val | cohort",
            ),
        }
        if what in texts:
            return texts[what]
    return ("", "")


def data_dictionary(columns: Iterable[str]) -> pd.DataFrame:
    """One row per column of the labeled CSV: meaning and unit or allowed values."""
    rows = [(c, *_describe(c)) for c in columns]
    missing = [c for c, text, _ in rows if not text]
    if missing:
        raise ValueError(
            f"No description for column(s) {missing}; "
            "extend core.services.export.dictionary._describe."
        )
    return pd.DataFrame(rows, columns=["column", "description", "unit_or_values"])


def dictionary_csv(columns: Iterable[str]) -> str:
    return csv_text(data_dictionary(columns))

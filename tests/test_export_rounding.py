"""Computed floats leave the export without float32 noise; stored values leave exactly."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from core.services.export import labeled_csv, labeled_frame, round_float_noise


def test_noise_is_rounded_and_real_digits_kept():
    values = pd.Series([17.00000088, float(np.float32(0.73105857)), 0.125, None, 1234.5678])
    rounded = round_float_noise(values)
    assert rounded.iloc[0] == 17.0
    assert rounded.iloc[1] == 0.7310586
    assert rounded.iloc[2] == 0.125
    assert pd.isna(rounded.iloc[3])
    assert rounded.iloc[4] == 1234.568
    assert round_float_noise(pd.Series(["a", "b"])).tolist() == ["a", "b"]


def _significant_digits(cell: str) -> int:
    mantissa = cell.lstrip("-").split("e")[0].replace(".", "").lstrip("0")
    return len(mantissa)


def test_the_labeled_csv_has_no_float_noise_and_keeps_stored_values(agreed_demo):
    db, store = agreed_demo
    frame = labeled_frame(db, store)
    csv = pd.read_csv(io.BytesIO(labeled_csv(frame)), dtype=str, keep_default_na=False)
    computed = [c for c in csv.columns if c.startswith(("gsu_echo_", "swe_stiffness_"))]
    numeric = [c for c in computed if c != "swe_stiffness_units"]
    assert numeric
    cells = [cell for c in numeric for cell in csv[c] if cell]
    assert cells
    assert max(_significant_digits(cell) for cell in cells) <= 7
    with db.read() as session:
        from db.models import Patient

        heights = {p.code: p.height_cm for p in session.query(Patient)}
    exported = dict(zip(csv["patient_code"], csv["height_cm"], strict=True))
    assert {code: float(value) for code, value in exported.items()} == heights

"""Reading a labeled CSV's metadata back into a database without those patients.

So a labeled CSV is also a portable metadata backup (images travel separately).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
from sqlalchemy import select

from core.cases import manifest
from core.common.csv_safety import restore_cell
from core.services.export.labeled import METADATA_COLUMNS
from db import audit
from db.engine import Database
from db.models import CtMeasurement, Patient, Reader


class MetadataImportError(ValueError):
    """A labeled CSV whose metadata cannot be imported; lists every problem found."""


def import_metadata(db: Database, csv: str | bytes | Path, *, actor: Reader | None = None) -> int:
    """Create the patients (and CT measurements) of a labeled CSV; returns how many.

    Every metadata value goes through the manifest checks (``core.cases.manifest``); all problems
    are reported at once and nothing is written unless every row is valid. Codes that already
    exist are refused, never overwritten. One audit row per patient.
    """
    if isinstance(csv, Path):
        text = csv.read_text(encoding="utf-8")
    elif isinstance(csv, bytes):
        text = csv.decode("utf-8")
    else:
        text = csv
    frame = pd.read_csv(io.StringIO(text.lstrip("\ufeff")), dtype=str, keep_default_na=False)
    frame = frame.map(restore_cell).rename(columns=restore_cell)
    required = [c for c in METADATA_COLUMNS if c != "synthetic"]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise MetadataImportError(
            f"The CSV lacks the column(s) {', '.join(missing)}; it needs {', '.join(required)}."
        )
    problems: list[str] = []
    records = []
    seen: set[str] = set()
    for row_number, row in enumerate(frame.to_dict("records"), start=2):
        try:
            code = manifest.check_code(row["patient_code"])
            if code in seen:
                raise manifest.FieldError(f"patient_code {code!r} appears twice.")
            seen.add(code)
            synthetic = str(row.get("synthetic", "no")).strip().lower()
            if synthetic not in ("yes", "no", ""):
                raise manifest.FieldError(f"synthetic must be yes or no, got {synthetic!r}.")
            records.append(
                {
                    "code": code,
                    "sex": manifest.check_sex(row["sex"]),
                    "age": manifest.check_age(row["age"]),
                    "height_cm": manifest.check_height(row["height_cm"]),
                    "weight_kg": manifest.check_weight(row["weight_kg"]),
                    "us_date": manifest.check_date("us_date", row["us_date"]),
                    "synthetic": synthetic == "yes",
                    "ct": {
                        "ct_date": manifest.check_date("ct_date", row["ct_date"]),
                        "sma_cm2": manifest.check_sma(row["l3_sma_cm2"]),
                        "exclusion_reason": manifest.check_reason(row["exclusion_reason"]),
                    },
                }
            )
        except manifest.FieldError as exc:
            problems.append(f"row {row_number}: {exc}")
    if problems:
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise MetadataImportError(f"{len(problems)} problem(s): {shown}{more}. Nothing imported.")

    def work(session) -> int:
        existing = set(
            session.scalars(
                select(Patient.code).where(Patient.code.in_([r["code"] for r in records]))
            )
        )
        if existing:
            raise MetadataImportError(
                f"{len(existing)} patient code(s) already exist "
                f"({', '.join(sorted(existing)[:5])}); import into a database without them. "
                "Nothing imported."
            )
        patients = []
        for record in records:
            ct = record.pop("ct")
            patient = Patient(**record)
            if any(v is not None for v in ct.values()):
                patient.ct = CtMeasurement(**ct)
            patients.append(patient)
        session.add_all(patients)
        session.flush()
        for patient in patients:
            audit.record(
                session,
                actor=actor,
                action="patient.import_metadata",
                entity="patient",
                entity_id=patient.id,
                patient_id=patient.id,
                after={"code": patient.code, "source": "labeled CSV"},
            )
        return len(patients)

    return db.write(work)

"""SWE color-bar ranges entered once per scanner preset, for labels OCR cannot read safely.

A wrong range shifts every stiffness value, so the label reader refuses doubtful labels
(``core.imaging.swe_scale_labels``); the image's stiffness is then relative (0–1). The
admin enters the range printed on the scanner's screen once, and every image from the same
manufacturer and model at the same screen size reuses it (issue 14, item 7). The screen
size stands in for the preset: scanners lay out each preset's screen the same way.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import audit
from db.models import Image, Reader, SweScalePreset
from db.rows import lock_or_insert

UNITS: Final = ("kPa", "m/s")
"""Young's modulus, or shear-wave speed (converted to kPa with E = 3ρc² when decoding)."""
MAX_HIGH: Final = {"kPa": 1000.0, "m/s": 20.0}
"""No clinical SWE scale reaches these (SuperSonic tops out at 300 kPa for muscle and
800 kPa for breast); a larger value is a typing error."""
_TEXT_MAX: Final = 64


@dataclass(frozen=True, order=True)
class PresetKey:
    """What identifies a preset: scanner manufacturer and model ("" when unknown), screen size."""

    manufacturer: str
    model: str
    width: int
    height: int

    def describe(self) -> str:
        """'GE LOGIQ E9, 1280×960', or 'scanner unknown (no DICOM header), 1280×960'."""
        scanner = " ".join(p for p in (self.manufacturer, self.model) if p)
        return f"{scanner or 'scanner unknown (no DICOM header)'}, {self.width}×{self.height}"


@dataclass(frozen=True)
class ScalePreset:
    key: PresetKey
    low: float
    high: float
    units: str
    updated_by: str | None
    updated_at: dt.datetime


def _header_text(header: dict[str, Any] | None, keyword: str) -> str:
    value = (header or {}).get(keyword)
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    return " ".join(str(value or "").split())[:_TEXT_MAX]


def preset_key(image: Image) -> PresetKey:
    """The preset an image belongs to, from its de-identified header and pixel size."""
    header = image.dicom_header
    return PresetKey(
        _header_text(header, "Manufacturer"),
        _header_text(header, "ManufacturerModelName"),
        image.width,
        image.height,
    )


def check_range(low: float, high: float, units: str) -> tuple[float, float, str]:
    """The range as floats, or a ValueError saying what is wrong and what to enter."""
    if units not in UNITS:
        raise ValueError(f"Units must be kPa or m/s, got {units!r}.")
    try:
        lo, hi = float(low), float(high)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"The range must be two numbers, got {low!r} and {high!r}.") from exc
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi <= lo:
        raise ValueError(
            f"The range {lo:g}–{hi:g} {units} is not valid: enter 0 ≤ bottom < top, the values "
            "printed at the bottom and top of the color bar."
        )
    if hi > MAX_HIGH[units]:
        raise ValueError(
            f"{hi:g} {units} is above any SWE scale (at most {MAX_HIGH[units]:g} {units}); "
            "check the units and the value printed at the top of the bar."
        )
    return lo, hi, units


class PresetLookup:
    """The stored presets, looked up by image; empty (and free) when none were entered."""

    def __init__(self, presets: dict[PresetKey, ScalePreset]) -> None:
        self.presets = presets

    @classmethod
    def load(cls, session: Session) -> PresetLookup:
        return cls(all_presets(session))

    def __bool__(self) -> bool:
        return bool(self.presets)

    def for_image(self, image: Image) -> ScalePreset | None:
        """The preset of an SWE image's scanner and screen size, if one was entered."""
        if not self.presets or image.modality != "SWE":
            return None
        return self.presets.get(preset_key(image))


def _view(row: SweScalePreset, username: str | None) -> ScalePreset:
    key = PresetKey(row.manufacturer, row.model, row.width, row.height)
    return ScalePreset(key, row.low, row.high, row.units, username, row.updated_at)


def _row(session: Session, key: PresetKey) -> SweScalePreset | None:
    return session.scalar(select(SweScalePreset).filter_by(**dataclasses.asdict(key)))


def all_presets(session: Session) -> dict[PresetKey, ScalePreset]:
    """Every stored preset by key (a handful of rows: one per scanner and screen layout)."""
    rows = session.execute(
        select(SweScalePreset, Reader.username).outerjoin(
            Reader, Reader.id == SweScalePreset.updated_by_id
        )
    ).all()
    return {view.key: view for view in (_view(row, name) for row, name in rows)}


def save_preset(
    session: Session, key: PresetKey, low: float, high: float, units: str, actor: Reader | None
) -> ScalePreset:
    """Create or change the preset for ``key``, with its audit row, in the caller's transaction.

    ``actor`` None is the local command line (audited as the system). Two admins saving
    the same preset at once both succeed, one after the other (``db.rows``).
    """
    lo, hi, units = check_range(low, high, units)
    values = {
        "low": lo,
        "high": hi,
        "units": units,
        "updated_by_id": actor.id if actor else None,
        "updated_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
    }
    row, created = lock_or_insert(session, SweScalePreset, dataclasses.asdict(key), values)
    before = None if created else {"low": row.low, "high": row.high, "units": row.units}
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="swe_preset_saved",
        entity="swe_scale_preset",
        entity_id=row.id,
        patient_id=None,
        before=before,
        after={"preset": key.describe(), "low": lo, "high": hi, "units": units},
    )
    return _view(row, actor.username if actor else None)


def delete_preset(session: Session, key: PresetKey, actor: Reader | None) -> bool:
    """Remove the preset for ``key`` (its images go back to the printed labels or relative)."""
    row = _row(session, key)
    if row is None:
        return False
    audit.record(
        session,
        actor=actor,
        action="swe_preset_deleted",
        entity="swe_scale_preset",
        entity_id=row.id,
        patient_id=None,
        before={"preset": key.describe(), "low": row.low, "high": row.high, "units": row.units},
    )
    session.delete(row)
    return True

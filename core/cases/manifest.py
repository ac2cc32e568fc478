"""The case manifest (CSV) and the value checks shared by import and metadata editing.

Every problem is collected with its row and column, so a user fixes a whole manifest in
one round instead of one error at a time.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

COLUMNS = (
    "patient_code",
    "sex",
    "age",
    "height_cm",
    "weight_kg",
    "gsu_file",
    "swe_file",
    "us_date",
    "ct_date",
    "l3_sma_cm2",
    "exclusion_reason",
)
CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DATE_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
"""YYYY-MM-DD only: ``date.fromisoformat`` also takes 20200301 and 2020-W10-1."""
AGE_RANGE = (0, 120)
HEIGHT_RANGE_CM = (50.0, 250.0)
WEIGHT_RANGE_KG = (10.0, 350.0)
SMA_RANGE_CM2 = (10.0, 500.0)
MAX_REASON_CHARS = 200
MAX_MANIFEST_ROWS = 50_000


@dataclass(frozen=True)
class Problem:
    """One reason an import row or file was refused."""

    reason: str
    row: int | None = None
    file: str | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.file:
            where.append(f"file {self.file!r}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


@dataclass(frozen=True)
class CaseRecord:
    """One validated manifest row; ``row`` is its line number in the CSV (header = 1)."""

    row: int
    code: str
    sex: str
    age: int
    height_cm: float
    weight_kg: float | None
    gsu_file: str | None
    swe_file: str | None
    us_date: dt.date | None
    ct_date: dt.date | None
    l3_sma_cm2: float | None
    exclusion_reason: str | None


class FieldError(ValueError):
    """A single out-of-range or malformed value, with a message a user can act on."""


def check_code(value: str) -> str:
    value = value.strip()
    if not CODE_PATTERN.match(value):
        raise FieldError(
            f"patient_code {value!r} is not a pseudonymous code: use 1–64 letters, digits, "
            "'.', '_' or '-' (no names, spaces or markup)."
        )
    return value


def check_sex(value: str) -> str:
    value = value.strip().upper()
    if value not in ("M", "F"):
        raise FieldError(f"sex must be M or F (the cutoffs are sex-specific), got {value!r}.")
    return value


def _number(name: str, value: str, low: float, high: float, unit: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise FieldError(f"{name} must be a number in {unit}, got {value!r}.") from None
    if not low <= number <= high:
        raise FieldError(f"{name} must be between {low:g} and {high:g} {unit}, got {number:g}.")
    return number


def check_age(value: str | int) -> int:
    number = _number("age", str(value), *AGE_RANGE, "years")
    if number != int(number):
        raise FieldError(f"age must be a whole number of years, got {value!r}.")
    return int(number)


def check_height(value: str | float) -> float:
    return _number("height_cm", str(value), *HEIGHT_RANGE_CM, "cm")


def check_weight(value: str | float | None) -> float | None:
    if value is None or str(value).strip() == "":
        return None
    return _number("weight_kg", str(value), *WEIGHT_RANGE_KG, "kg")


def check_sma(value: str | float | None) -> float | None:
    if value is None or str(value).strip() == "":
        return None
    return _number("l3_sma_cm2", str(value), *SMA_RANGE_CM2, "cm²")


def check_date(name: str, value: str | None) -> dt.date | None:
    if value is None or value.strip() == "":
        return None
    try:
        if not DATE_PATTERN.fullmatch(value.strip()):
            raise ValueError(value)
        date = dt.date.fromisoformat(value.strip())
    except ValueError:
        raise FieldError(f"{name} must be a date written YYYY-MM-DD, got {value!r}.") from None
    if not dt.date(1990, 1, 1) <= date <= dt.date.today():
        raise FieldError(f"{name} {date.isoformat()} is outside 1990 to today.")
    return date


def check_reason(value: str | None) -> str | None:
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if len(value) > MAX_REASON_CHARS:
        raise FieldError(f"exclusion_reason is longer than {MAX_REASON_CHARS} characters.")
    return value


def _file_name(value: str | None) -> str | None:
    return value.strip() if value and value.strip() else None


def _checked(problems: list[Problem], row: int, check: Callable[..., Any], *args: Any) -> Any:
    """Run one field check, collecting its problem instead of stopping at it."""
    try:
        return check(*args)
    except FieldError as exc:
        problems.append(Problem(str(exc), row=row))
        return None


def _csv_problem(exc: csv.Error) -> str:
    """A csv module error in words a spreadsheet user can act on."""
    save = "Save it again as CSV (UTF-8) from the spreadsheet and import again."
    if "field larger than field limit" in str(exc):
        return (
            "The manifest cannot be read from this row on: a value is longer than "
            f'{csv.field_size_limit():,} characters. Usually a double quote (") opens a '
            "value and is never closed, so the rest of the file runs into one value. Fix the "
            "quotes on this row (or remove them). " + save
        )
    if "NUL" in str(exc):
        return (
            "The manifest holds a NUL byte on this row, so it is not plain CSV text (perhaps "
            "a spreadsheet file renamed to .csv). " + save
        )
    return f"The manifest is not valid CSV from this row on ({exc}). " + save


def parse_manifest(text: str) -> tuple[list[CaseRecord], list[Problem]]:
    """Parse and check a manifest; returns the valid rows and every problem found.

    A manifest the csv module cannot read to its end yields no rows at all, only the
    problem: the rows after the break were never checked.
    """
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    next_row = 1
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            return [], [
                Problem(
                    f"The manifest lacks the column(s) {', '.join(missing)}. "
                    f"It needs: {', '.join(COLUMNS)}.",
                    row=1,
                )
            ]
        next_row = 2
        records: list[CaseRecord] = []
        problems: list[Problem] = []
        seen: dict[str, tuple[str, int]] = {}
        for index, raw in enumerate(reader, start=2):
            next_row = index + 1
            if index - 1 > MAX_MANIFEST_ROWS:
                problems.append(Problem(f"More than {MAX_MANIFEST_ROWS} rows; split the manifest."))
                break
            record = _record(index, raw, seen, problems)
            if record is not None:
                records.append(record)
    except csv.Error as exc:
        return [], [Problem(_csv_problem(exc), row=next_row)]
    return records, problems


def _record(
    index: int,
    raw: dict[str | None, Any],
    seen: dict[str, tuple[str, int]],
    problems: list[Problem],
) -> CaseRecord | None:
    """One row checked field by field; None (its problems added) when anything is wrong.

    ``seen`` maps lower-cased codes to (code, row): codes are unique ignoring case, as in
    the database.
    """
    row = {(k or "").strip(): (v or "") for k, v in raw.items() if k is not None}
    if not any(v.strip() for v in row.values()):
        return None
    row_problems: list[Problem] = []
    field = partial(_checked, row_problems, index)
    code = field(check_code, row["patient_code"])
    sex = field(check_sex, row["sex"])
    age = field(check_age, row["age"])
    height = field(check_height, row["height_cm"])
    weight = field(check_weight, row["weight_kg"])
    us_date = field(check_date, "us_date", row["us_date"])
    ct_date = field(check_date, "ct_date", row["ct_date"])
    sma = field(check_sma, row["l3_sma_cm2"])
    reason = field(check_reason, row["exclusion_reason"])
    gsu, swe = _file_name(row["gsu_file"]), _file_name(row["swe_file"])
    if gsu is None and swe is None:
        row_problems.append(Problem("The row names neither a gsu_file nor a swe_file.", index))
    if code is not None:
        earlier = seen.setdefault(code.lower(), (code, index))
        if earlier[1] != index:
            same = "" if earlier[0] == code else f" as {earlier[0]!r} (codes ignore case)"
            row_problems.append(
                Problem(f"patient_code {code!r} is also on row {earlier[1]}{same}.", row=index)
            )
    if row_problems:
        problems.extend(row_problems)
        return None
    return CaseRecord(
        index, code, sex, age, height, weight, gsu, swe, us_date, ct_date, sma, reason
    )

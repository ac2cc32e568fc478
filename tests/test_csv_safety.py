"""Formula-like CSV cells are neutralized (OWASP CSV injection) and restored exactly."""

from __future__ import annotations

import pandas as pd
import pytest

from core.common.csv_safety import csv_text, neutralize, restore_cell
from core.services.export import table_csv


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+cmd", "'+cmd"),
        ("-cmd", "'-cmd"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("'=x", "''=x"),
        ("-", "'-"),
        ("-1.5", "-1.5"),
        ("+3", "+3"),
        ("-2e-3", "-2e-3"),
        ("plain text", "plain text"),
        ("'quoted", "'quoted"),
        ("", ""),
        (-1.5, -1.5),
        (None, None),
    ],
)
def test_neutralize_and_restore(cell, written):
    assert neutralize(cell) == written
    assert restore_cell(neutralize(cell)) == cell


def test_numbers_stay_numbers_and_labels_are_neutralized():
    frame = pd.DataFrame({"=name": ["=A1", "ok"], "value": [-1.5, 2.0]}, index=["@x", "y"])
    text = csv_text(frame, index=True)
    assert text.splitlines() == [",'=name,value", "'@x,'=A1,-1.5", "y,ok,2.0"]
    table = pd.DataFrame({"AUC": [0.7]}, index=['=HYPERLINK("http://x")'])
    assert table_csv(table).decode().splitlines()[1] == '"\'=HYPERLINK(""http://x"")",0.7'

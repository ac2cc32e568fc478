"""CSV cells that a spreadsheet would run as formulas, made inert (OWASP CSV injection).

Free text such as an exclusion reason can hold ``=HYPERLINK("http://…","click")``; Excel,
LibreOffice and Google Sheets run a cell beginning with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return. Every CSV the app writes goes through :func:`csv_text`, which puts
a single quote before such a text cell (OWASP's rule), so the spreadsheet shows the text.

Numbers are never touched: numeric columns are written by pandas as they are, and a text
cell that is a plain number (``-1.5``, ``+3``, ``-2e-3``) stays a number. The change is
reversible: a cell gets one quote when, after its own leading quotes, it begins with one
of those characters, and :func:`restore_cell` removes exactly that quote, so the app's own
export reads back exactly (``core.services.export.import_metadata``).
"""

from __future__ import annotations

import re
from typing import Any, Final

import pandas as pd

FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")
QUOTE: Final = "'"
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _needs_quote(text: str) -> bool:
    """Whether ``text``, past its own leading quotes, starts like a formula."""
    return text.lstrip(QUOTE).startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(text)


def neutralize(value: Any) -> Any:
    """The cell as a spreadsheet may safely open it; non-text values are returned as they are."""
    if isinstance(value, str) and _needs_quote(value):
        return QUOTE + value
    return value


def restore_cell(value: Any) -> Any:
    """Undo :func:`neutralize` on a cell read back from one of the app's CSVs."""
    if isinstance(value, str) and value.startswith(QUOTE) and _needs_quote(value[1:]):
        return value[1:]
    return value


def _text_like(series: pd.Series | pd.Index) -> bool:
    return series.dtype == object or isinstance(series.dtype, pd.StringDtype)


def neutralize_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells, column names and row labels are neutralized."""
    out = frame.copy()
    for column in out.columns:
        if _text_like(out[column]):
            out[column] = out[column].map(neutralize)
    out.columns = [neutralize(c) for c in out.columns]
    if _text_like(out.index):
        out.index = out.index.map(neutralize)
    return out


def csv_text(frame: pd.DataFrame, *, index: bool = False) -> str:
    """``frame.to_csv`` with every formula-like text cell neutralized."""
    return neutralize_frame(frame).to_csv(index=index)

"""Each benchmark runs at a tiny size, so the scripts never rot (no timing is asserted).

A bench must measure every row it names: the test fails when a row is missing from the
table (a bench that skips a measurement, e.g. behind a swallowed ImportError), when the
bench raises, or when it exits with anything but 0 or 1. Exit 1 means a target was missed
and is allowed only with the ``MISS`` mark on a row: at these sizes, on a shared machine,
ratios are noise, and timing assertions do not belong in tests.

To add a bench: one ``Smoke`` entry with tiny arguments, the heading it prints, and the
first cell of every row its table must hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import pytest

from bench import (
    db_scale,
    fast_mode,
    import_memory,
    import_scale,
    inference,
    input_pipeline,
    memory,
    pages,
    rq_grid,
)


@dataclass(frozen=True)
class Smoke:
    module: ModuleType
    argv: list[str]
    heading: str
    rows: tuple[str, ...]
    """First cells of the table rows the bench must print (each measured, none skipped)."""


BENCHES = [
    Smoke(
        db_scale,
        ["--small", "12", "--large", "40"],
        "db_scale: 12 vs 40 patients",
        (
            "next ungraded + progress",
            "save grade (+ audit)",
            "cases list, page 1",
            "cases list, sarcopenic filter",
            *db_scale.EXPORT_ROWS,
        ),
    ),
    Smoke(
        pages,
        ["--small", "6", "--large", "12", "--repeat", "1"],
        "pages: AppTest run time, 6 vs 12",
        tuple(
            f"{page} as {role}, {cache}"
            for page, role in pages.ROLES.items()
            for cache in pages.CACHES
        ),
    ),
    # bench.memory runs bench.inference once and prints its table too: one run checks both.
    Smoke(
        memory,
        ["--size", "32"],
        "memory: peak RSS",
        ("inference: one patient's review", *inference.ROWS),
    ),
    Smoke(
        input_pipeline,
        ["--patients", "16", "--size", "32", "--epochs", "1"],
        "input_pipeline:",
        ("first (query", "in-memory batches (baseline)", "real input"),
    ),
    Smoke(
        fast_mode,
        [
            *("--patients", "30", "--archs", "vgg19", "--size", "32"),
            *("--full-epochs", "1", "--fast-epochs", "1", "--k-folds", "2"),
        ],
        "2-fold pooled test AUC",
        ("vgg19",),
    ),
    Smoke(
        rq_grid,
        ["--runs", "2", "--epochs", "1", "--overhead-jobs", "1"],
        "rq_grid: 2 fast-mode runs, 1 vs 2 workers",
        (
            "1 worker, s",
            "2 workers, s",
            "speedup 1 / 2 workers",
            "submit → job started (Redis), ms",
            "submit → run claimed (database), ms",
        ),
    ),
    Smoke(
        import_scale,
        ["--small", "20", "--patients", "40"],
        "import_scale: seconds per 1,000 patients, 20 vs 40",
        ("folder", "zip", "folder / zip at 20", "folder / zip at 40"),
    ),
    Smoke(
        import_memory,
        ["--patients", "6", "--large", "2", "--large-mp", "1"],
        "import_memory: peak RSS",
        ("2 patients", "6 patients", "1 × 1 MP", "2 × 1 MP", "6 patients, zip in memory"),
    ),
]


@pytest.mark.parametrize("smoke", BENCHES, ids=lambda s: s.module.__name__.split(".")[-1])
def test_bench_runs_and_prints_every_row(smoke: Smoke, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("SARCOPENIA_DATA_DIR", str(tmp_path))  # restored after the bench
    status = smoke.module.main(smoke.argv)
    out = capsys.readouterr().out
    assert status in (0, 1), out
    assert status == 0 or "MISS" in out, f"exit 1 without a missed target:\n{out}"
    assert smoke.heading in out
    assert "---" in out or "GB" in out
    lines = out.splitlines()
    for row in smoke.rows:
        assert any(line.startswith(row) for line in lines), f"row {row!r} missing:\n{out}"
    if "--k-folds" in smoke.argv:
        assert "fast folds" in out and " ± " in out

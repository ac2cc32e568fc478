"""Each benchmark runs at a tiny size, so the scripts never rot (no timing is asserted)."""

from __future__ import annotations

import pytest

from bench import db_scale, fast_mode, inference, input_pipeline, memory, pages


@pytest.mark.parametrize(
    ("module", "argv", "heading"),
    [
        (db_scale, ["--small", "12", "--large", "40"], "db_scale: 12 vs 40 patients"),
        (pages, ["--small", "6", "--large", "12"], "pages: AppTest run time, 6 vs 12"),
        (inference, ["--size", "32", "--repeat", "1"], "inference: one patient's review"),
        (memory, ["--size", "32"], "memory: peak RSS"),
        (
            input_pipeline,
            ["--patients", "16", "--size", "32", "--epochs", "1"],
            "input_pipeline:",
        ),
        (
            fast_mode,
            [
                "--patients",
                "30",
                "--archs",
                "vgg19",
                "--size",
                "32",
                "--full-epochs",
                "1",
                "--fast-epochs",
                "1",
                "--k-folds",
                "2",
            ],
            "2-fold pooled test AUC",
        ),
    ],
)
def test_bench_runs_and_prints_its_table(module, argv, heading, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("SARCOPENIA_DATA_DIR", str(tmp_path))  # restored after the bench
    assert module.main(argv) in (0, 1)
    out = capsys.readouterr().out
    assert heading in out
    assert "---" in out or "GB" in out
    if "--k-folds" in argv:
        assert "fast folds" in out and " ± " in out

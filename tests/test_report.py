"""The study report bundle built from tiny runs on the small demo cohort (issue 17)."""

from __future__ import annotations

import io
import json
import zipfile

import pandas as pd
import pytest

from core.common.store import ImageStore
from core.report.bundle import build_report
from core.report.checklists import CHECKLISTS, SECTIONS
from core.report.snapshot import take_snapshot
from core.report.tables import participant_flow
from db.engine import Database
from tests.tiny_runs import add_tiny_run


@pytest.fixture
def report_runs(agreed_demo: tuple[Database, ImageStore], tiny_models) -> tuple[Database, list]:
    db, store = agreed_demo
    runs = [
        add_tiny_run(db, store, tiny_models["gsu"]),
        add_tiny_run(db, store, tiny_models["swe"]),
    ]
    return db, runs


def test_flow_counts_add_up(report_runs) -> None:
    db, runs = report_runs
    flow = participant_flow(take_snapshot(db, runs))
    assert flow["enrolled"] == 24
    assert flow["enrolled"] == flow["excluded"] + flow["eligible"]
    assert sum(flow["excluded_by_reason"].values()) == flow["excluded"]
    for run in flow["runs"]:
        assert run["train"] + run["val"] + run["test"] <= flow["eligible"]
        assert run["index_positive"] + run["index_negative"] == run["test_scored"]
        assert run["tp"] + run["fp"] + run["fn"] + run["tn"] == run["test_scored"]


def test_bundle_holds_every_part_and_reruns_identically(report_runs) -> None:
    db, runs = report_runs
    bundle = zipfile.ZipFile(io.BytesIO(build_report(db, runs)))
    names = set(bundle.namelist())
    assert {"report.html", "report.pdf", "run_records.json", "model_card.json"} <= names
    for figure in ("flow", "roc", "calibration", "decision_curves"):
        assert {f"figures/{figure}.png", f"figures/{figure}.svg"} <= names
    for table in ("flow", "accuracy", "decision_curves", "subgroups", "checklists"):
        assert f"tables/{table}.csv" in names
    assert bundle.read("report.pdf").startswith(b"%PDF")
    assert bundle.read("figures/flow.png").startswith(b"\x89PNG")
    records = json.loads(bundle.read("run_records.json"))
    assert len(records["runs"]) == 2 and all(r["split"] for r in records["runs"])

    # Every checklist item is answered by a section present in the report, or listed as
    # left to the author.
    table = pd.read_csv(bundle.open("tables/checklists.csv"), keep_default_na=False)
    assert len(table) == sum(len(items) for items in CHECKLISTS.values())
    report = bundle.read("report.html").decode()
    for item in table.to_dict("records"):
        if item["anchor"]:
            assert item["answered by"] == SECTIONS[item["anchor"]]
            assert f"id='{item['anchor']}'" in report
        else:
            assert item["answered by"] == "left to the author"

    card = json.loads(bundle.read("model_card.json"))
    assert card["data"]["synthetic_demo_cohort"] is True
    assert "planted signal" in card["limitations"][0]
    assert card["labels"]["ct_window_days"] == 30

    again = zipfile.ZipFile(io.BytesIO(build_report(db, runs)))
    tables = [n for n in names if n.startswith("tables/")]
    assert tables and all(bundle.read(n) == again.read(n) for n in tables)


def test_report_refuses_no_runs(report_runs) -> None:
    db, _ = report_runs
    with pytest.raises(ValueError, match="at least one finished"):
        build_report(db, [])

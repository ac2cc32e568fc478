"""A consensus is reopened when a later counted grade contradicts it (SQLite; PostgreSQL
with ``TEST_DATABASE_URL``): the image returns to the disagreement queue, the old decision
is kept as superseded with its box and reason, and an audit row records it."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core.common.boxes import Box
from db.consensus import adjudicate, auto_agree, consensus_of, disagreements
from db.consensus_rules import superseded_history
from db.grading import save_box, save_grade
from db.models import AuditEvent, CropBox, SupersededConsensus
from db.readers import ensure_reader
from tests.test_grading_db import _grade, cohort  # noqa: F401  (fixture)


@pytest.fixture
def late(db, cohort):  # noqa: F811
    """Two more readers who read after the first two agreed."""
    db.write(lambda s: [ensure_reader(s, u, f"Dr {u.upper()}") for u in ("c", "d")])
    with db.read() as s:
        return {u: ensure_reader(s, u) for u in ("c", "d")}


def _agreed(db, cohort, grade: int = 0):  # noqa: F811
    """P0's GSU agreed at ``grade`` by readers a and b, with their boxes averaged."""
    gsu, r = cohort
    for name, x in (("a", 10), ("b", 20)):
        _grade(db, gsu[0], r[name], grade)
        db.write(lambda s, n=name, x=x: save_box(s, gsu[0], s.merge(r[n]), Box(x, x, 100, 100)))
    assert db.write(auto_agree) == 1
    return gsu[0]


def _superseded_audit(db):
    with db.read() as s:
        return list(
            s.scalars(select(AuditEvent).where(AuditEvent.action == "consensus.superseded"))
        )


def test_a_disagreeing_new_reader_reopens_an_agreement(db, cohort, late):  # noqa: F811
    image = _agreed(db, cohort, 0)
    _grade(db, image, late["c"], 1)
    _grade(db, image, late["d"], 2)
    with db.read() as s:
        assert consensus_of(s, image) is None
        (item,) = disagreements(s)
        (old,) = superseded_history(s, image)
        consensus_box = s.scalar(
            select(CropBox).where(CropBox.image_id == image, CropBox.source == "consensus")
        )
    assert item.image_id == image
    assert sorted((g.username, g.grade) for g in item.grades) == [
        ("a", 0),
        ("b", 0),
        ("c", 1),
        ("d", 2),
    ]
    assert (old.grade, old.method, old.superseded_by_id) == (0, "agreement", late["c"].id)
    assert old.box == {"x": 15, "y": 15, "w": 100, "h": 100}
    assert "Dr C graded 1" in old.reason
    assert consensus_box is None
    (event,) = _superseded_audit(db)
    assert event.actor == "c" and event.entity_id is not None
    assert event.before["grade"] == 0 and event.before["method"] == "agreement"
    assert event.after == {"superseded_id": old.id, "reason": old.reason}


def test_an_agreeing_new_reader_keeps_the_consensus(db, cohort, late):  # noqa: F811
    image = _agreed(db, cohort, 2)
    _grade(db, image, late["c"], 2)
    with db.read() as s:
        assert consensus_of(s, image).grade == 2
        assert s.scalar(select(func.count(SupersededConsensus.id))) == 0
    assert _superseded_audit(db) == []


def test_an_uncertain_grade_does_not_count_until_settled(db, cohort, late):  # noqa: F811
    image = _agreed(db, cohort, 0)
    db.write(lambda s: save_grade(s, image, s.merge(late["c"]), 3, uncertain=True))
    with db.read() as s:
        assert consensus_of(s, image).grade == 0
    db.write(lambda s: save_grade(s, image, s.merge(late["c"]), 3))
    with db.read() as s:
        assert consensus_of(s, image) is None
        assert [d.image_id for d in disagreements(s)] == [image]


def test_withdrawing_a_grade_the_agreement_rested_on_reopens_it(db, cohort):  # noqa: F811
    image = _agreed(db, cohort, 1)
    _, r = cohort
    db.write(lambda s: save_grade(s, image, s.merge(r["b"]), 1, uncertain=True))
    with db.read() as s:
        assert consensus_of(s, image) is None
        assert disagreements(s) == []  # one counted grade: nothing to settle yet
        (old,) = superseded_history(s, image)
    assert "withdrew" in old.reason
    db.write(lambda s: save_grade(s, image, s.merge(r["b"]), 1))
    assert db.write(auto_agree) == 1


def test_an_adjudication_reopens_only_for_a_new_differing_grade(db, cohort, late):  # noqa: F811
    gsu, r = cohort
    image = gsu[1]
    _grade(db, image, r["a"], 0)
    _grade(db, image, r["b"], 1)
    db.write(lambda s: adjudicate(s, image, s.merge(r["boss"]), 0, Box(5, 5, 50, 50)))
    db.write(lambda s: save_grade(s, image, s.merge(r["b"]), 1, comment="still 1"))
    _grade(db, image, late["c"], 0)
    with db.read() as s:
        assert consensus_of(s, image).method == "adjudication"
    _grade(db, image, late["d"], 3)
    with db.read() as s:
        assert consensus_of(s, image) is None
        (old,) = superseded_history(s, image)
    assert (old.method, old.decided_by_id, old.box) == (
        "adjudication",
        r["boss"].id,
        {"x": 5, "y": 5, "w": 50, "h": 50},
    )
    db.write(lambda s: adjudicate(s, image, s.merge(r["boss"]), 1, None))
    with db.read() as s:
        assert consensus_of(s, image).grade == 1
    assert len(_superseded_audit(db)) == 1


def test_a_failed_grade_save_leaves_the_consensus_in_place(db, cohort, late):  # noqa: F811
    image = _agreed(db, cohort, 0)

    def grade_then_fail(s):
        save_grade(s, image, s.merge(late["c"]), 2)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        db.write(grade_then_fail)
    with db.read() as s:
        assert consensus_of(s, image).grade == 0
        assert s.scalar(select(func.count(SupersededConsensus.id))) == 0
    assert _superseded_audit(db) == []


def test_case_list_shows_a_reader_only_the_consensus_of_images_they_graded(
    db,
    cohort,  # noqa: F811
    late,
):
    from db.cases import CaseFilter, list_cases

    image = _agreed(db, cohort, 2)
    _, r = cohort
    with db.read() as s:
        reader_c = s.merge(late["c"])
        admin = s.merge(r["boss"])
        shown = {row.code: row.consensus for row in list_cases(s, viewer=reader_c)[0]}
        done = list_cases(s, CaseFilter(consensus="done"), viewer=reader_c)[1]
        assert {row.code: row.consensus for row in list_cases(s, viewer=admin)[0]}["P0"] == 2
    assert shown == {"P0": None, "P1": None, "P2": None} and done == 0
    _grade(db, image, late["c"], 2)
    with db.read() as s:
        reader_c = s.merge(late["c"])
        shown = {row.code: row.consensus for row in list_cases(s, viewer=reader_c)[0]}
        done = list_cases(s, CaseFilter(consensus="done"), viewer=reader_c)[1]
    assert shown["P0"] == 2 and done == 1

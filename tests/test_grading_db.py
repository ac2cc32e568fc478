"""Grades, boxes, blinding, consensus and audit on a real database."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core.common.boxes import Box
from db.consensus import (
    ConsensusConflict,
    adjudicate,
    auto_agree,
    consensus_of,
    disagreements,
    reader_pairs,
)
from db.grading import (
    BlindingError,
    GradingError,
    OwnGrade,
    Progress,
    neighbour_case,
    next_ungraded,
    own_box,
    own_entry,
    progress,
    save_box,
    save_grade,
    unblinded_view,
)
from db.models import AuditEvent, CropBox, Grade, Image, Patient
from db.readers import ensure_reader


@pytest.fixture
def cohort(db):
    """Three patients with GSU and SWE images and three accounts."""

    def work(session):
        for i in range(3):
            patient = Patient(code=f"P{i}", sex="F", age=50, height_cm=160.0, weight_kg=60.0)
            for modality in ("GSU", "SWE"):
                patient.images.append(
                    Image(
                        modality=modality,
                        sha256=f"{i}{modality}".ljust(64, "0"),
                        path=f"x/{i}{modality}.png",
                        width=640,
                        height=480,
                        source_format="png",
                    )
                )
            session.add(patient)
        ensure_reader(session, "a")
        ensure_reader(session, "b")
        ensure_reader(session, "boss", role="admin")

    db.write(work)
    with db.read() as s:
        gsu = list(s.scalars(select(Image.id).where(Image.modality == "GSU").order_by(Image.id)))
        readers = {r: ensure_reader(s, r) for r in ("a", "b", "boss")}
    return gsu, readers


def _grade(db, image_id, reader, grade):
    db.write(lambda s: save_grade(s, image_id, s.merge(reader), grade))


def test_queue_moves_to_the_next_ungraded_image(db, cohort):
    gsu, r = cohort
    with db.read() as s:
        assert next_ungraded(s, r["a"].id) == gsu[0]
    _grade(db, gsu[0], r["a"], 1)
    with db.read() as s:
        assert next_ungraded(s, r["a"].id) == gsu[1]
        assert next_ungraded(s, r["a"].id, after_code="P1") == gsu[2]
        assert next_ungraded(s, r["b"].id) == gsu[0]
        assert progress(s, r["a"].id) == Progress(1, 3, 0)


def test_blinding_hides_other_grades_until_own_submission(db, cohort):
    gsu, r = cohort
    _grade(db, gsu[0], r["a"], 2)
    with db.read() as s, pytest.raises(BlindingError):
        unblinded_view(s, gsu[0], r["b"])
    _grade(db, gsu[0], r["b"], 3)
    with db.read() as s:
        view = unblinded_view(s, gsu[0], r["b"])
        admin_view = unblinded_view(s, gsu[1], r["boss"])
    assert [(o.reader, o.grade) for o in view.others] == [("a", 2)]
    assert admin_view.others == []


def test_changing_a_grade_keeps_one_row_and_is_audited(db, cohort):
    gsu, r = cohort
    _grade(db, gsu[0], r["a"], 1)
    _grade(db, gsu[0], r["a"], 1)
    _grade(db, gsu[0], r["a"], 3)
    with db.read() as s:
        assert s.scalar(select(func.count(Grade.id))) == 1
        actions = s.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
        last = s.scalar(select(AuditEvent).order_by(AuditEvent.id.desc()))
    assert actions == ["grade.create", "grade.update"]
    assert last.before == {"grade": 1} and last.after["grade"] == 3


@pytest.mark.parametrize("grade", [-1, 4])
def test_out_of_range_grade_is_refused_and_nothing_is_written(db, cohort, grade):
    gsu, r = cohort
    with pytest.raises(GradingError, match="0, 1, 2 or 3"):
        _grade(db, gsu[0], r["a"], grade)
    with db.read() as s:
        assert s.scalar(select(func.count(AuditEvent.id))) == 0


@pytest.mark.parametrize(
    ("box", "message"),
    [(Box(600, 10, 100, 100), "outside"), (Box(10, 10, 15, 100), "at least 16")],
)
def test_bad_boxes_are_refused(db, cohort, box, message):
    gsu, r = cohort
    with pytest.raises(GradingError, match=message):
        db.write(lambda s: save_box(s, gsu[0], s.merge(r["a"]), box))


def test_boxes_are_saved_replaced_cleared_and_audited(db, cohort):
    gsu, r = cohort
    db.write(
        lambda s: save_box(s, gsu[0], s.merge(r["a"]), Box(0, 0, 640, 480), auto_accepted=True)
    )
    db.write(lambda s: save_box(s, gsu[0], s.merge(r["a"]), Box(10, 20, 100, 80)))
    with db.read() as s:
        assert own_box(s, gsu[0], r["a"].id) == Box(10, 20, 100, 80)
        row = s.scalar(select(CropBox))
        assert row.auto_accepted is False
    db.write(lambda s: save_box(s, gsu[0], s.merge(r["a"]), None))
    with db.read() as s:
        assert own_box(s, gsu[0], r["a"].id) is None
        actions = s.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions == ["box.create", "box.update", "box.clear"]


def test_consensus_rules(db, cohort):
    gsu, r = cohort
    for image, (ga, gb) in zip(gsu, [(1, 1), (1, 2), (0, 0)], strict=True):
        _grade(db, image, r["a"], ga)
        _grade(db, image, r["b"], gb)
    db.write(lambda s: save_box(s, gsu[0], s.merge(r["a"]), Box(10, 10, 100, 100)))
    db.write(lambda s: save_box(s, gsu[0], s.merge(r["b"]), Box(20, 20, 100, 100)))
    assert db.write(auto_agree) == 2
    assert db.write(auto_agree) == 0
    with db.read() as s:
        (pending,) = disagreements(s)
        first = consensus_of(s, gsu[0])
        consensus_box = s.scalar(
            select(CropBox).where(CropBox.image_id == gsu[0], CropBox.owner_key == "consensus")
        )
    assert pending.image_id == gsu[1]
    assert (first.grade, first.method, first.decided_by_id) == (1, "agreement", None)
    assert (consensus_box.x, consensus_box.y, consensus_box.w) == (15, 15, 100)

    with pytest.raises(PermissionError):
        db.write(lambda s: adjudicate(s, gsu[1], s.merge(r["a"]), 2, None))
    db.write(lambda s: adjudicate(s, gsu[1], s.merge(r["boss"]), 2, Box(5, 5, 50, 50)))
    with pytest.raises(ConsensusConflict):
        db.write(lambda s: adjudicate(s, gsu[1], s.merge(r["boss"]), 1, None))
    with db.read() as s:
        decided = consensus_of(s, gsu[1])
        assert disagreements(s) == []
        n_audit = s.scalar(
            select(func.count(AuditEvent.id)).where(AuditEvent.action.like("consensus.%"))
        )
    assert (decided.grade, decided.method, decided.decided_by_id) == (
        2,
        "adjudication",
        r["boss"].id,
    )
    assert n_audit == 3


def test_reader_pairs_collects_common_images(db, cohort):
    gsu, r = cohort
    for image, (ga, gb) in zip(gsu, [(1, 1), (1, 2), (0, 0)], strict=True):
        _grade(db, image, r["a"], ga)
        _grade(db, image, r["b"], gb)
    with db.read() as s:
        (pair,) = reader_pairs(s)
    assert (pair.reader_a, pair.reader_b) == ("a", "b")
    assert pair.grades_a == [1, 1, 0] and pair.grades_b == [1, 2, 0]


def test_uncertain_grade_is_stored_counted_and_kept_out_of_consensus(db, cohort):
    gsu, r = cohort
    _grade(db, gsu[0], r["a"], 2)
    db.write(
        lambda s: save_grade(
            s, gsu[0], s.merge(r["b"]), 1, uncertain=True, comment="  shadowing artefact  "
        )
    )
    with db.read() as s:
        assert own_entry(s, gsu[0], r["b"].id) == OwnGrade(1, True, "shadowing artefact")
        assert progress(s, r["b"].id) == Progress(1, 3, 1)
        assert disagreements(s) == []
        last = s.scalar(select(AuditEvent).order_by(AuditEvent.id.desc()))
    assert last.after == {
        "grade": 1,
        "uncertain": True,
        "comment": "shadowing artefact",
        "image_id": gsu[0],
    }
    assert db.write(auto_agree) == 0

    db.write(lambda s: save_grade(s, gsu[0], s.merge(r["b"]), 1))
    with db.read() as s:
        (pending,) = disagreements(s)
        assert own_entry(s, gsu[0], r["b"].id) == OwnGrade(1, False, None)
    assert pending.image_id == gsu[0]


def test_a_comment_over_the_limit_is_refused_whole(db, cohort):
    gsu, r = cohort
    with pytest.raises(GradingError, match="shorten it to 500"):
        db.write(lambda s: save_grade(s, gsu[0], s.merge(r["a"]), 1, comment="x" * 501))
    with db.read() as s:
        assert s.scalar(select(func.count(Grade.id))) == 0
        assert s.scalar(select(func.count(AuditEvent.id))) == 0


def test_previous_and_next_case_follow_patient_codes(db, cohort):
    gsu, _ = cohort
    with db.read() as s:
        assert neighbour_case(s, "P1", -1) == gsu[0]
        assert neighbour_case(s, "P1", 1) == gsu[2]
        assert neighbour_case(s, "P0", -1) is None
        assert neighbour_case(s, "P2", 1) is None

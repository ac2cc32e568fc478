"""AppTest of the Consensus page: auto-agreement, adjudication, agreement statistics."""

from __future__ import annotations

from sqlalchemy import func, select

from db.consensus import disagreements
from db.engine import Database
from db.models import ConsensusGrade, CropBox
from tests.apptest_helpers import open_page


def test_admin_sees_agreement_stats_and_auto_consensus(demo_env):
    at = open_page("pages/consensus.py", "admin")
    assert not at.exception
    stats = at.dataframe[0].value
    [pair] = list(stats["readers"])
    assert pair.startswith("Simulated reader A") and " vs Simulated reader B" in pair
    assert stats["images"].iloc[0] == 24
    assert "(" in stats["quadratic-weighted"].iloc[0]
    assert len(at.get("plotly_chart")) == 2
    with Database().read() as s:
        agreed = s.scalar(select(func.count(ConsensusGrade.id)).filter_by(method="agreement"))
        pending = disagreements(s)
    assert agreed > 0 and pending
    assert agreed + len(pending) == 24


def test_admin_adjudicates_a_disagreement(demo_env):
    at = open_page("pages/consensus.py", "admin")
    with Database().read() as s:
        first = disagreements(s)[0]
    at.selectbox(key="consensus_patient").set_value(first.patient_code).run()
    at.button_group(key=f"cg-{first.image_id}").set_value(3)
    at.radio[0].set_value("Average of the readers' boxes")
    at.button(key=f"FormSubmitter:adjudicate-{first.image_id}-Decide").click().run()
    assert not at.exception
    with Database().read() as s:
        row = s.scalar(select(ConsensusGrade).filter_by(image_id=first.image_id))
        box = s.scalar(select(CropBox).filter_by(image_id=first.image_id, owner_key="consensus"))
    assert (row.grade, row.method) == (3, "adjudication")
    assert box is not None


def test_a_reader_sees_no_disagreement_before_grading(demo_env):
    at = open_page("pages/consensus.py", "radiologist1")
    assert not at.exception
    assert any("Disagreements to settle (0)" in h.value for h in at.subheader)
    assert not at.get("form")


def test_model_advice_is_shown_beside_a_disagreement_labelled_as_advice(demo_env, tiny_models):
    from core.common import config
    from core.common.store import ImageStore
    from db.consensus import auto_agree
    from tests.tiny_runs import add_tiny_run

    db = Database(config.database_url())
    db.write(auto_agree)
    add_tiny_run(db, ImageStore(config.images_dir()), tiny_models["gsu"], task="echogenicity_gsu")
    db.dispose()
    at = open_page("pages/consensus.py", "admin")
    assert not at.exception
    advice = [t.value for t in at.text if t.value.startswith("Model advice:")]
    assert len(advice) == 1 and "echogenicity, p = " in advice[0]
    assert any("Advice only" in c.value for c in at.caption)


def test_a_superseded_consensus_returns_to_the_queue_with_its_reason(demo_env):
    from db.consensus import auto_agree
    from db.grading import save_grade
    from db.models import Image, Patient
    from db.readers import get_reader

    db = Database()
    db.write(auto_agree)
    with db.read() as s:
        agreed = s.scalar(select(ConsensusGrade).filter_by(method="agreement"))
        code = s.scalar(select(Patient.code).join(Image).where(Image.id == agreed.image_id))
        image_id, grade = agreed.image_id, agreed.grade
    db.write(lambda s: save_grade(s, image_id, get_reader(s, "radiologist1"), (grade + 1) % 4))
    db.dispose()
    at = open_page("pages/consensus.py", "admin")
    at.selectbox(key="consensus_patient").set_value(code).run()
    assert not at.exception
    earlier = [t.value for t in at.text if t.value.startswith("Earlier consensus")]
    assert len(earlier) == 1 and f"grade {grade} (agreement)" in earlier[0]
    assert f"graded {(grade + 1) % 4}" in earlier[0]

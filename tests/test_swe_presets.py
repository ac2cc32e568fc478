"""SWE bar ranges per scanner preset: entered once where OCR refused the labels, then reused.

One demo patient's SWE image is replaced by a screen from another scanner ("ACME Sono 9")
whose color bar carries no readable labels: it decodes in relative units until an admin
enters the range, then in kPa, and so does every image of that scanner and screen size.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from core.cases.phantom import render_case
from core.cli import main
from core.common import config
from core.common.errors import UserError
from core.common.store import ImageStore
from core.imaging.swe_decode import KPA_UNITS, RELATIVE_UNITS, PresetRange, decode_swe
from core.learning.dataset import DatasetSettings, collect_cases, load_task_data
from core.services.auth import PermissionDenied
from core.services.export import FeatureCache, labeled_frame
from core.services.review import patient_review
from core.services.swe_presets import (
    delete_scale_preset,
    list_scale_presets,
    preset_overview,
    save_scale_preset,
    swe_preset_key,
)
from db.engine import Database
from db.models import AuditEvent, CropBox, Image, Patient, Reader
from db.swe_presets import PresetKey, check_range, preset_key
from tests.test_roi_detect import build_screenshot
from tests.test_swe_decode import BAR, COLOR, _error_pct

ACME = PresetKey("ACME", "Sono 9", 640, 480)
APP = str(Path(__file__).resolve().parents[1] / "app.py")


def swap_in_unlabelled_swe(db: Database, store: ImageStore, code: str) -> np.ndarray:
    """Give ``code`` an ACME SWE screen whose bar has no labels; returns the true scale
    position (0–1) of every colored pixel. All its boxes become the color box."""
    shot = build_screenshot(color=COLOR, bar=BAR, bar_labels=None)
    buffer = io.BytesIO()
    PILImage.fromarray(shot.rgb).save(buffer, format="PNG")
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    path, _ = store.put(data, sha, ".png")

    def swap(session) -> None:
        image = session.scalars(
            select(Image).join(Patient).where(Patient.code == code, Image.modality == "SWE")
        ).one()
        image.sha256, image.path = sha, path
        image.dicom_header = {"Manufacturer": "ACME", "ManufacturerModelName": "Sono 9"}
        for box in session.scalars(select(CropBox).where(CropBox.image_id == image.id)):
            box.x, box.y, box.w, box.h = COLOR.as_tuple()

    db.write(swap)
    return shot.t_true


@pytest.fixture
def acme(demo_env: Path) -> tuple[Database, ImageStore, str, np.ndarray]:
    db = Database(config.database_url())
    store = ImageStore(config.images_dir())
    with db.read() as session:
        code = session.scalars(select(Patient.code).order_by(Patient.id)).first()
    t_true = swap_in_unlabelled_swe(db, store, code)
    yield db, store, code, t_true
    db.dispose()


def _reader(db: Database, username: str) -> Reader:
    with db.read() as session:
        return session.scalars(select(Reader).where(Reader.username == username)).one()


def test_preset_key_comes_from_the_header_and_the_screen_size(acme) -> None:
    db, _, code, _ = acme
    assert swe_preset_key(db, code) == ACME
    assert ACME.describe() == "ACME Sono 9, 640×480"
    plain = Image(width=800, height=600, dicom_header=None, modality="SWE")
    assert preset_key(plain).describe() == "scanner unknown (no DICOM header), 800×600"
    with pytest.raises(UserError, match="no SWE image"):
        swe_preset_key(db, "NOBODY")


@pytest.mark.parametrize(
    ("low", "high", "units", "message"),
    [
        (10, 5, "kPa", "0 ≤ bottom < top"),
        (-1, 5, "kPa", "0 ≤ bottom < top"),
        (0, float("nan"), "kPa", "0 ≤ bottom < top"),
        (0, 3000, "kPa", "above any SWE scale"),
        (0, 60, "m/s", "above any SWE scale"),
        (0, 60, "cm/s", "kPa or m/s"),
        ("zero", 60, "kPa", "two numbers"),
    ],
)
def test_bad_ranges_are_refused_with_what_to_enter(low, high, units, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_range(low, high, units)


def test_preset_is_only_a_fallback_for_refused_labels() -> None:
    unlabelled = build_screenshot(color=COLOR, bar=BAR, bar_labels=None)
    result = decode_swe(unlabelled.rgb, preset=PresetRange(0.0, 200.0))
    assert (result.units, result.scale_source) == (KPA_UNITS, "scanner preset")
    assert np.median(_error_pct(result.stiffness, unlabelled.t_true * 200, 200.0)) < 2.0
    speed = decode_swe(unlabelled.rgb, preset=PresetRange(0.0, 10.0, "m/s"))
    finite = np.isfinite(speed.stiffness)
    assert speed.stiffness[finite].max() <= 300.0 + 1e-3  # 10 m/s is 300 kPa (E = 3ρc²)
    labelled = render_case(4, 1, 0.0, 60.0)
    read = decode_swe(labelled.swe, preset=PresetRange(0.0, 1000.0))
    assert read.scale_source == "read from labels"  # printed labels that read win
    assert np.nanmax(read.stiffness) <= labelled.scale_kpa[1] + 1e-3
    assert decode_swe(unlabelled.rgb).units == RELATIVE_UNITS


def test_admin_enters_a_range_and_the_scanner_decodes_in_kpa(acme) -> None:
    db, store, code, t_true = acme
    admin = _reader(db, "admin")
    overview = {s.key: s for s in preset_overview(db, store)}
    assert overview[ACME].needs_range and overview[ACME].images == 1
    assert overview[ACME].labels.startswith("Labels refused")
    demo_scanner = next(s for s in overview.values() if s.key != ACME)
    assert demo_scanner.labels_read and not demo_scanner.needs_range

    before = patient_review(db, store, code, gradcam=False).stiffness
    assert (before.units, before.scale_source) == (RELATIVE_UNITS, "none")
    assert before.preset_key == ACME and before.preset is None

    save_scale_preset(db, ACME, 0, 150, "kPa", admin)
    after = patient_review(db, store, code, gradcam=False).stiffness
    assert (after.units, after.scale_source) == (KPA_UNITS, "scanner preset")
    assert after.preset is not None and after.preset.updated_by == "admin"
    crop = t_true[COLOR.y : COLOR.y2, COLOR.x : COLOR.x2]
    finite = np.isfinite(crop)
    expected = np.median(crop[finite]) * 150.0
    assert after.stats["median"] == pytest.approx(expected, abs=0.03 * 150.0)
    assert not {s.key: s for s in preset_overview(db, store)}[ACME].needs_range

    save_scale_preset(db, ACME, 0, 7.5, "m/s", admin)  # changed: decoded anew, not cached
    assert patient_review(db, store, code, gradcam=False).stiffness.high <= 3 * 7.5**2 + 1e-3
    with db.read() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.entity == "swe_scale_preset")
        ).all()
    assert [e.action for e in events] == ["swe_preset_saved", "swe_preset_saved"]
    assert events[1].before == {"low": 0.0, "high": 150.0, "units": "kPa"}
    assert delete_scale_preset(db, ACME, admin)
    assert patient_review(db, store, code, gradcam=False).stiffness.units == RELATIVE_UNITS


def test_a_reader_may_not_set_a_range_and_a_bad_one_changes_nothing(acme) -> None:
    db, _, _, _ = acme
    with pytest.raises(PermissionDenied, match="admin"):
        save_scale_preset(db, ACME, 0, 150, "kPa", _reader(db, "radiologist1"))
    with pytest.raises(UserError, match="above any SWE scale"):
        save_scale_preset(db, ACME, 0, 5000, "kPa", _reader(db, "admin"))
    assert list_scale_presets(db) == []
    with db.read() as session:
        assert not session.scalars(
            select(AuditEvent).where(AuditEvent.entity == "swe_scale_preset")
        ).all()


def test_training_data_follow_the_preset(acme) -> None:
    db, store, code, _ = acme
    settings = DatasetSettings("sarcopenia_fusion", input_size=(32, 32), sizes=(11, 4, 6))
    cases, _ = collect_cases(db, store, settings)
    case = next(c for c in cases if c.code == code)
    assert case.images["swe"].scale_preset is None
    with pytest.raises(ValueError, match="relative units"):
        load_task_data(db, store, settings)  # kPa and relative would mix in one input
    save_scale_preset(db, ACME, 0, 60, "kPa", None)
    cases, _ = collect_cases(db, store, settings)
    case = next(c for c in cases if c.code == code)
    assert case.images["swe"].scale_preset == PresetRange(0.0, 60.0, "kPa")
    assert next(c for c in cases if c.code != code).images["swe"].scale_preset is None
    data = load_task_data(db, store, settings)
    assert not data.warnings
    save_scale_preset(db, ACME, 0, 90, "kPa", None)
    assert load_task_data(db, store, settings).fingerprint != data.fingerprint


def test_cli_sets_lists_and_deletes_a_preset(acme, capsys) -> None:
    _, _, code, _ = acme
    assert main(["swe-preset", "set", "--patient", code, "--low", "0", "--high", "9000"]) == 1
    assert "above any SWE scale" in capsys.readouterr().err
    args = ["--patient", code, "--low", "0", "--high", "7.5", "--units", "m/s"]
    assert main(["swe-preset", "set", *args]) == 0
    assert main(["swe-preset", "list"]) == 0
    assert "ACME Sono 9, 640×480: 0–7.5 m/s (set by command line" in capsys.readouterr().out
    assert main(["swe-preset", "delete", "--patient", code]) == 0
    assert main(["swe-preset", "list"]) == 0
    assert "No SWE scale presets" in capsys.readouterr().out


def test_cases_page_asks_for_the_range_of_a_scanner_it_cannot_read(acme) -> None:
    db, _, _, _ = acme
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["reader_username"] = "admin"
    at.run()
    assert not at.exception
    asking = "1 scanner preset(s) decode stiffness in relative units"
    assert any(asking in w.value for w in at.warning)
    assert at.selectbox(key="swe_preset_choice").value is not None
    assert "Scanner preset: ACME Sono 9, 640×480" in [t.value for t in at.text]
    at.number_input(key="cases_swe_range-high").set_value(150.0)
    at.button(key="FormSubmitter:cases_swe_range-Save the range for this scanner preset").click()
    at.run()
    assert not at.exception
    assert [(p.low, p.high, p.units) for p in list_scale_presets(db)] == [(0.0, 150.0, "kPa")]
    assert any("Saved 0–150 kPa for ACME Sono 9" in s.value for s in at.success)
    assert not at.warning or all("relative units" not in w.value for w in at.warning)


def test_cases_page_shows_no_range_form_to_readers(acme) -> None:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["reader_username"] = "radiologist1"
    at.run()
    assert not at.exception
    assert "Scanner preset: ACME Sono 9, 640×480" not in [t.value for t in at.text]


def test_export_stiffness_follows_the_preset(acme) -> None:
    db, store, code, _ = acme
    cache = FeatureCache(store.root.parent / "cache" / "features")

    def row():
        table = labeled_frame(db, store, feature_cache=cache)
        return table.set_index("patient_code").loc[code]

    assert row()["swe_stiffness_units"] == RELATIVE_UNITS
    save_scale_preset(db, ACME, 0, 150, "kPa", None)
    after = row()  # the same image and box, but a new range: not taken from the cache
    assert after["swe_stiffness_units"] == KPA_UNITS
    assert 1.0 < after["swe_stiffness_median"] < 150.0

"""The SWE scale-range form: where the Cases and Review pages ask for a scanner's bar range."""

from __future__ import annotations

import streamlit as st

from core.common.errors import UserError
from core.services.auth import PermissionDenied
from core.services.swe_presets import delete_scale_preset, save_scale_preset
from db.models import Reader
from db.swe_presets import UNITS, PresetKey, ScalePreset
from pages.components import get_db, plain

_FLASH = "swe_preset_flash"

SOURCE_TEXT = {
    "read from labels": "kPa, read from the bar's printed labels.",
    "configured": "kPa, from a configured range.",
    "scanner preset": "kPa, from the range entered for this scanner preset.",
    "none": "Relative units (0–1): the bar's labels could not be read with confidence and no "
    "range was entered for this scanner preset.",
}
"""How the stiffness was scaled, by ``SweDecoding.scale_source``."""


def describe_preset(preset: ScalePreset) -> str:
    who = preset.updated_by or "the command line"
    return (
        f"{preset.low:g}–{preset.high:g} {preset.units}, set by {who} "
        f"on {preset.updated_at:%Y-%m-%d}"
    )


def scale_range_form(
    key: PresetKey, preset: ScalePreset | None, reader: Reader, *, form_key: str
) -> None:
    """Enter, change or remove the bar range of one scanner preset (admins; checked again
    on the server). Saving reruns the page so every image of the preset decodes anew."""
    flash = st.session_state.pop(_FLASH, None)
    if flash:
        st.success(plain(flash))
    st.text(f"Scanner preset: {key.describe()}")
    if preset is not None:
        st.text(f"Range now: {describe_preset(preset)}")
    with st.form(form_key):
        cols = st.columns(3)
        low = cols[0].number_input(
            "Bottom of the bar",
            min_value=0.0,
            value=preset.low if preset else 0.0,
            format="%.2f",
            key=f"{form_key}-low",
        )
        high = cols[1].number_input(
            "Top of the bar",
            min_value=0.0,
            value=preset.high if preset else None,
            format="%.2f",
            placeholder="as printed",
            key=f"{form_key}-high",
        )
        units = cols[2].selectbox(
            "Units",
            UNITS,
            index=UNITS.index(preset.units) if preset else 0,
            key=f"{form_key}-units",
        )
        save = st.form_submit_button("Save the range for this scanner preset")
    if save:
        _save(key, low, high, units, reader)
    if preset is not None and st.button("Remove this range", key=f"{form_key}-remove"):
        try:
            delete_scale_preset(get_db(), key, reader)
        except PermissionDenied as exc:
            st.error(plain(str(exc)))
            return
        st.session_state[_FLASH] = f"Range removed for {key.describe()}."
        st.rerun()


def _save(key: PresetKey, low: float, high: float | None, units: str, reader: Reader) -> None:
    if high is None:
        st.error("Enter the value printed at the top of the bar.")
        return
    try:
        saved = save_scale_preset(get_db(), key, low, high, units, reader)
    except (UserError, PermissionDenied) as exc:
        st.error(plain(str(exc)))
        return
    st.session_state[_FLASH] = (
        f"Saved {saved.low:g}–{saved.high:g} {saved.units} for {key.describe()}: "
        "its SWE images now decode in kPa where their labels are not read."
    )
    st.rerun()

"""Download buttons that never fail silently.

Streamlit's deferred downloads (``st.download_button`` with a callable) build the file
outside the script run: an error there never reaches the page, and the button's file id
is replaced on every rerun, so a click while the page reruns (say, 1 s after another
download) fails with ``MediaFileStorageError: Deferred file … not found`` and the browser
shows nothing. Here the bytes are built inside the script run, so a failure is shown as
a message, and handed to the button as data: Streamlit names such a file by its content,
so its address stays the same across reruns. ``on_click="ignore"`` keeps a download from
rerunning the page at all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from core.services.export import FigureExportError

BUILD_ERRORS = (FigureExportError, OSError, ValueError)
"""What building a file may raise for a reason the user can act on."""


def download(label: str, data: bytes, file_name: str, mime: str, *, key: str) -> None:
    """A download of bytes built already: no deferred file, no rerun on click."""
    st.download_button(label, data, file_name, mime, key=key, on_click="ignore")


@dataclass(frozen=True)
class Built:
    stamp: str
    """What the file was built from; a different stamp means the file is out of date."""
    data: bytes
    at: dt.datetime


def prepared_download(
    label: str,
    build: Callable[[], bytes],
    file_name: str,
    mime: str,
    *,
    key: str,
    stamp: str,
) -> None:
    """A slow file in two steps: *Prepare* builds it here (errors shown), then *Download*.

    The built bytes stay in the session while ``stamp`` (what they were built from) holds.
    """
    state_key = f"built:{key}"
    built = st.session_state.get(state_key)
    if built is not None and built.stamp != stamp:
        built = None
    cols = st.columns([1, 1, 2])
    if cols[0].button(f"Prepare {label}", key=f"prepare_{key}"):
        try:
            with st.spinner(f"Preparing {label}…"):
                built = Built(stamp, build(), dt.datetime.now(dt.UTC))
        except BUILD_ERRORS as exc:
            st.session_state.pop(state_key, None)
            st.error(f"{label} could not be prepared.")
            st.text(str(exc))
            return
        st.session_state[state_key] = built
    if built is None:
        return
    with cols[1]:
        download(f"Download {label}", built.data, file_name, mime, key=key)
    cols[2].caption(f"Prepared {built.at:%H:%M:%S} UTC, {len(built.data) / 1e6:.2f} MB.")

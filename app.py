"""Rectus femoris ultrasound: grading, crop boxes and sarcopenia models (Yi et al. 2022).

Run with ``streamlit run app.py``. The database and data folder follow
``DATABASE_URL`` and ``SARCOPENIA_DATA_DIR`` (see README).
"""

import streamlit as st

from db.readers import list_readers
from pages.components import READER_KEY, get_db

st.set_page_config(page_title="RF ultrasound · sarcopenia", page_icon="🦵", layout="wide")


def reader_sidebar() -> None:
    """Who is reading. Real sign-in arrives with the security work; this picks a name."""
    with get_db().read() as session:
        readers = [(r.username, r.display_name, r.role) for r in list_readers(session)]
    with st.sidebar:
        if not readers:
            st.caption("No readers yet: load the demo cohort or import cases.")
            return
        names = [u for u, _, _ in readers]
        labels = {u: f"{name} ({role})" for u, name, role in readers}
        current = st.session_state.get(READER_KEY)
        choice = st.selectbox(
            "Reader",
            names,
            index=names.index(current) if current in names else None,
            format_func=labels.get,
            placeholder="Choose your name",
        )
        st.session_state[READER_KEY] = choice


pages = [
    st.Page("pages/cases.py", title="Cases", icon=":material/groups:", default=True),
]
reader_sidebar()
st.navigation(pages).run()

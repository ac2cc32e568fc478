"""Rectus femoris ultrasound: grading, crop boxes and sarcopenia models (Yi et al. 2022).

Run with ``streamlit run app.py``. The database and data folder follow
``DATABASE_URL`` and ``SARCOPENIA_DATA_DIR`` (see README).

Only the pages a role may use are registered with ``st.navigation``, so a reader cannot
open an admin page even by typing its URL; each admin page also checks the role itself.
"""

import secrets

import streamlit as st

from core.auth import AccountError, AdminExistsError, admin_exists, authenticate, create_first_admin
from pages.components import READER_KEY, current_reader, demo_offer, get_db

st.set_page_config(page_title="RF ultrasound · sarcopenia", page_icon="🦵", layout="wide")
CLIENT_KEY = "client_key"


def client_key() -> str:
    """Rate-limit key of this browser session.

    Not the IP address: readers behind one proxy or on one workstation share it, and one
    person's typos must not lock out the department. The per-username limit still holds.
    """
    if CLIENT_KEY not in st.session_state:
        st.session_state[CLIENT_KEY] = secrets.token_hex(8)
    return f"session:{st.session_state[CLIENT_KEY]}"


def first_run_page() -> None:
    """Exists only while there is no admin: create the first one, or load the demo."""
    st.title("Create the first administrator")
    st.caption("No administrator exists yet. The account you create here manages readers.")
    with st.form("first_admin"):
        username = st.text_input("Username", max_chars=32)
        display = st.text_input("Display name", max_chars=128)
        password = st.text_input("Password (at least 10 characters)", type="password")
        again = st.text_input("Repeat the password", type="password")
        submitted = st.form_submit_button("Create administrator", type="primary")
    if not submitted:
        st.divider()
        st.subheader("Or try the synthetic demo")
        demo_offer()
        return
    if password != again:
        st.error("The two passwords differ.")
        return
    try:
        create_first_admin(get_db(), username, display or username, password)
    except (AccountError, AdminExistsError) as exc:
        st.error(str(exc))
        return
    st.success("Administrator created. Sign in now.")
    st.rerun()


def sign_in_page() -> None:
    st.title("Sign in")
    with st.form("sign_in"):
        username = st.text_input("Username", max_chars=64)
        password = st.text_input("Password", type="password")
        if not st.form_submit_button("Sign in", type="primary"):
            return
    result = authenticate(get_db(), username, password, client_key=client_key())
    if not result.ok:
        st.error(result.message)
        return
    st.session_state[READER_KEY] = result.reader.username
    st.rerun()


def sign_out() -> None:
    for key in list(st.session_state):
        if key != CLIENT_KEY:
            del st.session_state[key]


def signed_in_sidebar(name: str, role: str) -> None:
    with st.sidebar:
        st.caption("Signed in as")
        st.text(f"{name} ({role})")
        st.button("Sign out", on_click=sign_out, key="sign_out")


reader = current_reader()
if reader is None:
    st.session_state.pop(READER_KEY, None)
    if not admin_exists(get_db()):
        pages = [st.Page(first_run_page, title="First run", url_path="first-run")]
    else:
        pages = [st.Page(sign_in_page, title="Sign in", url_path="sign-in")]
else:
    signed_in_sidebar(reader.display_name, reader.role)
    pages = [
        st.Page("pages/cases.py", title="Cases", icon=":material/groups:", default=True),
        st.Page("pages/grading.py", title="Grading", icon=":material/grading:"),
        st.Page("pages/consensus.py", title="Consensus", icon=":material/handshake:"),
        st.Page("pages/comparison.py", title="Comparison", icon=":material/leaderboard:"),
        st.Page("pages/review.py", title="Review", icon=":material/biotech:"),
        st.Page("pages/registry.py", title="Models", icon=":material/model_training:"),
    ]
    if reader.role == "admin":
        pages.append(st.Page("pages/training.py", title="Training", icon=":material/play_circle:"))
        pages.append(
            st.Page(
                "pages/admin.py",
                title="Readers",
                icon=":material/manage_accounts:",
                url_path="admin",
            )
        )
st.navigation(pages).run()

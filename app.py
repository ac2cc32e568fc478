"""Rectus femoris ultrasound: grading, crop boxes and sarcopenia models (Yi et al. 2022).

Run with ``streamlit run app.py``. The database and data folder follow
``DATABASE_URL`` and ``SARCOPENIA_DATA_DIR`` (see README).

Only the pages a role may use are registered with ``st.navigation``, so a reader cannot
open an admin page even by typing its URL; each admin page also checks the role itself.
A sign-in lasts across reloads through a session cookie (``core.services.sessions``), ends after
``SARCOPENIA_IDLE_MINUTES`` without activity, and a page's URL opened while signed out
shows the sign-in form there and that page after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import streamlit as st

from core.common import config
from core.services.auth import (
    AccountError,
    AdminExistsError,
    admin_exists,
    authenticate,
    create_first_admin,
)
from core.services.sessions import (
    SESSION_COOKIE,
    end_session,
    is_idle,
    resume_session,
    start_session,
)
from db.models import Reader
from pages.components import READER_KEY, current_reader, demo_offer, get_db, plain

st.set_page_config(page_title="RF ultrasound · sarcopenia", page_icon="🦵", layout="wide")
# .streamlit/config.toml hides the sidebar menu so that a freshly started server never
# lists the raw pages/ files; the real menu below is registered by this script.
st.set_option("client.showSidebarNavigation", True)
TOKEN_KEY = "session_token"
NOTICE_KEY = "sign_in_notice"
REQUESTED_KEY = "requested_page"
CLEAR_COOKIE_KEY = "clear_session_cookie"
IDLE_CHECK_SECONDS = 60


@dataclass(frozen=True)
class PageSpec:
    script: str
    title: str
    icon: str
    url_path: str
    admin_only: bool = False
    default: bool = False


PAGES = (
    PageSpec("pages/cases.py", "Cases", ":material/groups:", "cases", default=True),
    PageSpec("pages/grading.py", "Grading", ":material/grading:", "grading"),
    PageSpec("pages/consensus.py", "Consensus", ":material/handshake:", "consensus"),
    PageSpec("pages/comparison.py", "Comparison", ":material/leaderboard:", "comparison"),
    PageSpec("pages/review.py", "Review", ":material/biotech:", "review"),
    PageSpec("pages/registry.py", "Models", ":material/model_training:", "registry"),
    PageSpec("pages/training.py", "Training", ":material/play_circle:", "training", True),
    PageSpec("pages/report.py", "Report", ":material/description:", "report", True),
    PageSpec("pages/pacs.py", "PACS", ":material/cloud_sync:", "pacs", True),
    PageSpec("pages/admin.py", "Readers", ":material/manage_accounts:", "admin", True),
)


def client_address() -> str:
    """Rate-limit key: the client address as the app sees it, which a reload cannot change.

    Behind a reverse proxy on this host, Streamlit's server takes the address from the
    proxy's X-Forwarded-For (docs/deployment.md); a direct local visitor has none.
    """
    address = st.context.ip_address
    return f"ip:{address if isinstance(address, str) else 'local'}"


def set_cookie(token: str | None) -> None:
    """Give the browser the session token (or clear it) from a tiny script.

    Streamlit offers no way to set a cookie from the server, so it cannot be HttpOnly;
    it is SameSite=Strict, Secure over https, and worthless once revoked (sign-out,
    idle, deactivation). docs/deployment.md discusses the trade-off.
    """
    age = int(config.session_lifetime().total_seconds()) if token else 0
    cookie = json.dumps(f"{SESSION_COOKIE}={token or ''}; Path=/; Max-Age={age}; SameSite=Strict")
    st.html(
        "<script>document.cookie = "
        f"{cookie} + (location.protocol === 'https:' ? '; Secure' : '');</script>",
        unsafe_allow_javascript=True,
    )


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
        demo_offer(None)
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


def sign_in_page(requested: str | None = None) -> None:
    """The sign-in form; ``requested`` is the page whose URL was opened, shown after it."""
    st.title("Sign in")
    if NOTICE_KEY in st.session_state:
        st.info(st.session_state.pop(NOTICE_KEY))
    with st.form("sign_in"):
        username = st.text_input("Username", max_chars=64)
        password = st.text_input("Password", type="password")
        if not st.form_submit_button("Sign in", type="primary"):
            return
    db = get_db()
    client = client_address()
    result = authenticate(db, username, password, client_key=client)
    if not result.ok or result.reader is None:
        st.error(result.message)
        return
    st.session_state[TOKEN_KEY] = start_session(db, result.reader, client=client)
    st.session_state[READER_KEY] = result.reader.username
    if requested is not None:
        st.session_state[REQUESTED_KEY] = requested
    st.rerun()


def sign_in_at(spec: PageSpec):
    """The sign-in form under a page's URL, so that page opens once signed in (Streamlit
    identifies a page by its URL path)."""

    def page() -> None:
        sign_in_page(spec.url_path)

    return st.Page(page, title=spec.title, url_path=spec.url_path)


def sign_out() -> None:
    token = st.session_state.get(TOKEN_KEY)
    if token:
        end_session(get_db(), token)
    st.session_state.clear()
    st.session_state[CLEAR_COOKIE_KEY] = True


def signed_in_reader() -> Reader | None:
    """The reader of this browser: this session's, else the one its cookie names.

    Every full run checks the session (idle, expiry, revocation) and counts as activity.
    """
    cookie = st.context.cookies.get(SESSION_COOKIE)
    token = st.session_state.get(TOKEN_KEY) or (cookie if isinstance(cookie, str) else None)
    if token:
        resumed = resume_session(get_db(), token)
        if resumed.reader is None:
            for key in (TOKEN_KEY, READER_KEY):
                st.session_state.pop(key, None)
            st.session_state[CLEAR_COOKIE_KEY] = True
            if resumed.message:
                st.session_state[NOTICE_KEY] = resumed.message
            return None
        st.session_state[TOKEN_KEY] = token
        st.session_state[READER_KEY] = resumed.reader.username
    return current_reader()


@st.fragment(run_every=IDLE_CHECK_SECONDS)
def idle_watch() -> None:
    """Once a minute, without counting as activity: sign out a browser left idle, so an
    unattended screen does not keep showing patients."""
    token = st.session_state.get(TOKEN_KEY)
    if token and is_idle(get_db(), token):
        st.rerun(scope="app")


def signed_in_sidebar(reader: Reader) -> None:
    with st.sidebar:
        st.caption("Signed in as")
        st.text(f"{reader.display_name} ({reader.role})")
        if reader.demo:
            st.warning("Demo account: its password is public. Never use it for real patients.")
        st.button("Sign out", on_click=sign_out, key="sign_out")
        if TOKEN_KEY in st.session_state:
            set_cookie(st.session_state[TOKEN_KEY])
            idle_watch()


def pages_for(reader: Reader) -> list:
    allowed = [spec for spec in PAGES if reader.role == "admin" or not spec.admin_only]
    requested = st.session_state.pop(REQUESTED_KEY, None)
    if requested is not None and requested not in {spec.url_path for spec in allowed}:
        st.info(f"The page you opened (/{plain(requested)}) is for administrators.")
    return [
        st.Page(
            spec.script,
            title=spec.title,
            icon=spec.icon,
            url_path=spec.url_path,
            default=spec.default,
        )
        for spec in allowed
    ]


reader = signed_in_reader()
if reader is None:
    st.session_state.pop(READER_KEY, None)
    if st.session_state.pop(CLEAR_COOKIE_KEY, False):
        set_cookie(None)
    if not admin_exists(get_db()):
        st.navigation([st.Page(first_run_page, title="First run", url_path="first-run")]).run()
    else:
        sign_in = st.Page(sign_in_page, title="Sign in", url_path="sign-in", default=True)
        st.navigation([sign_in, *(sign_in_at(spec) for spec in PAGES)], position="hidden").run()
else:
    signed_in_sidebar(reader)
    st.navigation(pages_for(reader)).run()

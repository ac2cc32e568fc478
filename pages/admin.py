"""Admin: reader accounts. List them, create one, reset a password, lift a sign-in delay,
deactivate or reactivate.

Admins only, checked here on the server (``require_admin``) and again by ``core.services.auth`` in
the transaction of every change, against the database's current view of the acting admin.
Every change writes its audit event; no password or hash is ever shown.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.services.auth import (
    AccountError,
    PermissionDenied,
    ReaderSummary,
    account_notes,
    create_reader,
    list_readers_for_admin,
    set_active,
    set_password,
    unlock,
)
from db.models import ROLES
from pages.components import get_db, plain, require_admin, show_table

FLASH_KEY = "admin_flash"

admin = require_admin()
db = get_db()


def flash_and_rerun(text: str) -> None:
    """Keep a success message across the rerun that refreshes the table."""
    st.session_state[FLASH_KEY] = text
    st.rerun()


def refuse(exc: Exception) -> None:
    st.error(plain(str(exc)))


def readers_table(readers: list[ReaderSummary]) -> None:
    rows = [
        {
            "username": r.username,
            "name": r.display_name,
            "role": r.role,
            "active": r.active,
            "last sign-in (UTC)": f"{r.last_sign_in:%Y-%m-%d %H:%M}" if r.last_sign_in else "never",
            "password set": r.has_password,
            "notes": account_notes(r),
        }
        for r in readers
    ]
    show_table(pd.DataFrame(rows), hide_index=True, key="admin_readers")


def passwords_match(password: str, again: str) -> bool:
    if password != again:
        st.error("The two passwords differ; nothing was changed.")
    return password == again


def create_form() -> None:
    with st.form("create_reader", clear_on_submit=True):
        cols = st.columns(3)
        username = cols[0].text_input("Username", max_chars=32)
        display_name = cols[1].text_input("Display name", max_chars=128)
        role = cols[2].selectbox("Role", ROLES, index=ROLES.index("reader"))
        password = cols[0].text_input("Initial password (at least 10 characters)", type="password")
        again = cols[1].text_input("Repeat the password", type="password")
        if not st.form_submit_button("Create reader", type="primary"):
            return
    if not passwords_match(password, again):
        return
    try:
        created = create_reader(db, username, display_name, role, password, actor=admin)
    except (AccountError, PermissionDenied) as exc:
        refuse(exc)
        return
    flash_and_rerun(f"Created {created.role} {plain(created.username)}.")


def reset_form(usernames: list[str]) -> None:
    with st.form("reset_password", clear_on_submit=True):
        username = st.selectbox(
            "Account", usernames, index=None, placeholder="Username", key="admin_reset_user"
        )
        password = st.text_input("New password (at least 10 characters)", type="password")
        again = st.text_input("Repeat the new password", type="password")
        if not st.form_submit_button("Reset password"):
            return
    if username is None:
        st.error("Pick the account first.")
        return
    if not passwords_match(password, again):
        return
    try:
        set_password(db, username, password, actor=admin)
    except (AccountError, PermissionDenied) as exc:
        refuse(exc)
        return
    flash_and_rerun(f"Password of {plain(username)} reset; tell them to change it.")


def activation(readers: list[ReaderSummary]) -> None:
    by_name = {r.username: r for r in readers}
    username = st.selectbox(
        "Account", list(by_name), index=None, placeholder="Username", key="admin_toggle_user"
    )
    if username is None:
        return
    target = by_name[username]
    if target.username == admin.username:
        st.caption("You cannot deactivate your own account; another admin can.")
        return
    label = "Deactivate" if target.active else "Activate"
    st.caption(f"{plain(target.display_name)} is {'active' if target.active else 'deactivated'}.")
    if not st.button(label, key="admin_toggle"):
        return
    try:
        changed = set_active(db, username, not target.active, actor=admin)
    except (AccountError, PermissionDenied) as exc:
        refuse(exc)
        return
    state = "active again" if changed.active else "deactivated: they can no longer sign in"
    flash_and_rerun(f"{plain(changed.username)} is {state}.")


def unlock_form(readers: list[ReaderSummary]) -> None:
    waiting = [r.username for r in readers if r.waiting_until is not None]
    if not waiting:
        st.caption("No account has a sign-in delay running.")
        return
    st.caption(
        "Failed sign-ins make the next try wait, twice as long each time (up to 5 minutes). "
        "Lift the wait once you know it was the reader mistyping, not someone guessing."
    )
    username = st.selectbox(
        "Account", waiting, index=None, placeholder="Username", key="admin_unlock_user"
    )
    if username is None or not st.button("Lift the sign-in delay", key="admin_unlock"):
        return
    try:
        cleared = unlock(db, username, actor=admin)
    except (AccountError, PermissionDenied) as exc:
        refuse(exc)
        return
    flash_and_rerun(f"Sign-in delay of {plain(username)} lifted ({cleared} failed attempts).")


def demo_warning(readers: list[ReaderSummary]) -> None:
    """Demo accounts have a public password: say so until they are deactivated."""
    live = [r.username for r in readers if r.demo and r.active and r.has_password]
    if live:
        st.warning(
            f"Demo accounts with the public password are active: {', '.join(live)}. "
            "Deactivate them (or start the app with SARCOPENIA_DEMO=0, which refuses them) "
            "before any real patient data is used here."
        )


st.title("Readers")
if FLASH_KEY in st.session_state:
    st.success(st.session_state.pop(FLASH_KEY))
try:
    readers = list_readers_for_admin(db, actor=admin)
except PermissionDenied as exc:
    refuse(exc)
    st.stop()
demo_warning(readers)
readers_table(readers)
create_tab, reset_tab, unlock_tab, active_tab = st.tabs(
    ["Create", "Reset password", "Sign-in delays", "Activate / deactivate"]
)
with create_tab:
    create_form()
with reset_tab:
    reset_form([r.username for r in readers])
with unlock_tab:
    unlock_form(readers)
with active_tab:
    activation(readers)

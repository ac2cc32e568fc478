"""Password policy and Argon2id hashing: the only place a clear-text password is handled.

Hashes use argon2-cffi's defaults (Argon2id, RFC 9106) and embed their own salt and
parameters; the policy favours length over complexity rules (NIST SP 800-63B).
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from db import auth as accounts
from db.auth import AccountError

HASHER = PasswordHasher()
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024


class PasswordPolicyError(AccountError):
    """A new password that the policy refuses; the message says what is required."""


def check_password_policy(password: str, *, username: str | None = None) -> None:
    """Refuse passwords that are short or equal to the username (length beats complexity
    rules, NIST SP 800-63B)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(
            f"Password too short: use at least {MIN_PASSWORD_LENGTH} characters "
            "(a few unrelated words work well)."
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(
            f"Password too long: use at most {MAX_PASSWORD_LENGTH} characters."
        )
    if not password.strip():
        raise PasswordPolicyError("Password must not be only spaces.")
    if username is not None and password.strip().lower() == accounts.normalize_username(username):
        raise PasswordPolicyError("Password must not be the username.")


def hash_password(password: str) -> str:
    """An Argon2id hash that embeds its own salt and parameters."""
    return HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches; a malformed hash counts as no match."""
    try:
        return HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with weaker parameters than ``HASHER`` uses now."""
    try:
        return HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


@functools.cache
def dummy_hash() -> str:
    """Verified against when the username is unknown, so the reply takes as long."""
    return HASHER.hash("not a password of anybody")

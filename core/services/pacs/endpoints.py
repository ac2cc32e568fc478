"""DICOMweb endpoints of the hospital PACS, read from the environment or secrets.toml.

Secrets never touch the database: an endpoint's password or token lives in an environment
variable or in Streamlit's ``.streamlit/secrets.toml`` (readable by the server's account
only), and :class:`Endpoint` hides it from ``repr`` so it cannot leak into a page or log.

Environment (one endpoint, named ``default``)::

    SARCOPENIA_PACS_URL=https://pacs.example.org/dicom-web
    SARCOPENIA_PACS_USER=sarcopenia            # with _PASSWORD: HTTP basic authentication
    SARCOPENIA_PACS_PASSWORD=...
    SARCOPENIA_PACS_TOKEN=...                  # instead: a bearer token

secrets.toml (any number, one table each under ``[pacs]``)::

    [pacs.radiology]
    url = "https://pacs.example.org/dicom-web"
    auth = "basic"            # "basic", "bearer" or "none"
    username = "sarcopenia"
    password = "..."          # or token = "..." with auth = "bearer"
    timeout_s = 30            # optional: seconds to wait for each answer
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from core.common.errors import UserError

AUTH_KINDS = ("none", "basic", "bearer")
SECRETS_FILE_ENV = "SARCOPENIA_SECRETS_FILE"
DEFAULT_SECRETS_FILE = Path(".streamlit/secrets.toml")
ENV_NAME = "default"


@dataclass(frozen=True)
class Endpoint:
    """One DICOMweb service; ``secret`` is the password or token and is never shown."""

    name: str
    url: str
    auth: str = "none"
    username: str = ""
    secret: str = field(default="", repr=False)
    timeout_s: float = 30.0

    def describe(self) -> str:
        """What a page may show: name, address and how it signs in, never the secret."""
        who = f" as {self.username}" if self.auth == "basic" else ""
        return f"{self.name}: {self.url} ({self.auth} authentication{who})"


def _checked(
    name: str, url: str, auth: str, username: str, secret: str, timeout_s: float = 30.0
) -> Endpoint:
    where = f"PACS endpoint {name!r}"
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UserError(
            f"{where}: the address {url!r} is not an http(s) URL; give the DICOMweb root, "
            "e.g. https://pacs.example.org/dicom-web."
        )
    if auth not in AUTH_KINDS:
        raise UserError(f"{where}: auth must be one of {', '.join(AUTH_KINDS)}, not {auth!r}.")
    if auth == "basic" and not (username and secret):
        raise UserError(f"{where}: basic authentication needs a username and a password.")
    if auth == "bearer" and not secret:
        raise UserError(f"{where}: bearer authentication needs a token.")
    if not 1 <= timeout_s <= 600:
        raise UserError(f"{where}: timeout_s must be between 1 and 600 seconds, not {timeout_s}.")
    return Endpoint(name, url.rstrip("/"), auth, username, secret, timeout_s)


def _from_environment() -> list[Endpoint]:
    url = os.environ.get("SARCOPENIA_PACS_URL", "").strip()
    if not url:
        return []
    token = os.environ.get("SARCOPENIA_PACS_TOKEN", "")
    user = os.environ.get("SARCOPENIA_PACS_USER", "")
    password = os.environ.get("SARCOPENIA_PACS_PASSWORD", "")
    if token:
        return [_checked(ENV_NAME, url, "bearer", "", token)]
    if user:
        return [_checked(ENV_NAME, url, "basic", user, password)]
    return [_checked(ENV_NAME, url, "none", "", "")]


def secrets_file() -> Path:
    return Path(os.environ.get(SECRETS_FILE_ENV, DEFAULT_SECRETS_FILE))


def _from_secrets(path: Path) -> list[Endpoint]:
    if not path.is_file():
        return []
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8")).get("pacs", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid TOML ({exc}); fix the file and reload.") from None
    endpoints = []
    for name, table in sorted(tables.items()):
        if not isinstance(table, dict):
            continue
        auth = str(table.get("auth", "basic" if table.get("username") else "none"))
        secret = str(table.get("token" if auth == "bearer" else "password", ""))
        try:
            timeout_s = float(table.get("timeout_s", 30))
        except (TypeError, ValueError):
            raise UserError(f"PACS endpoint {name!r}: timeout_s must be a number.") from None
        endpoints.append(
            _checked(
                name,
                str(table.get("url", "")),
                auth,
                str(table.get("username", "")),
                secret,
                timeout_s,
            )
        )
    return endpoints


def configured_endpoints() -> list[Endpoint]:
    """Every endpoint set up on this server: the environment's first, then secrets.toml."""
    return _from_environment() + _from_secrets(secrets_file())


def endpoint(name: str | None = None) -> Endpoint:
    """The endpoint called ``name`` (the first one when None); UserError when none is set up."""
    endpoints = configured_endpoints()
    if not endpoints:
        raise UserError(
            "No PACS is set up on this server. Set SARCOPENIA_PACS_URL (and the user and "
            "password or token) or add a [pacs.<name>] table to .streamlit/secrets.toml; "
            "see docs/deployment.md."
        )
    for candidate in endpoints:
        if name is None or candidate.name == name:
            return candidate
    names = ", ".join(e.name for e in endpoints)
    raise UserError(f"There is no PACS endpoint {name!r}; the configured ones are: {names}.")

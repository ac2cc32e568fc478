"""The pseudonym link: which hospital patient and images stand behind each pseudonym.

It lives in its own SQLite file (``<data folder>/pseudonym-link.db``, mode 0600), never
in the research database, so the research database, its exports and its backups identify
no one. Only the PACS service (admin pages and CLI) opens it: to give a returning patient
the same pseudonym, to find the original images when a report is written back, and to
remember which reports were sent. ``copy_link`` is the one way to back it up, on purpose.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.common import config

LINK_FILE = "pseudonym-link.db"
PSEUDONYM_PREFIX = "PX"
SCHEMA = """
CREATE TABLE IF NOT EXISTS patient (
    pseudonym TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS instance (
    sop_instance_uid TEXT PRIMARY KEY,
    pseudonym TEXT NOT NULL REFERENCES patient(pseudonym),
    modality TEXT NOT NULL CHECK (modality IN ('GSU', 'SWE')),
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    accession_number TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS sent_report (
    sop_instance_uid TEXT PRIMARY KEY,
    pseudonym TEXT NOT NULL REFERENCES patient(pseudonym),
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    sent_by TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class LinkedInstance:
    sop_instance_uid: str
    pseudonym: str
    modality: str
    study_instance_uid: str
    series_instance_uid: str
    accession_number: str


@dataclass(frozen=True)
class SentReport:
    sop_instance_uid: str
    pseudonym: str
    study_instance_uid: str
    series_instance_uid: str
    content_sha256: str
    sent_at: str
    sent_by: str


def link_path() -> Path:
    return config.data_dir() / LINK_FILE


class PseudonymLink:
    """The link file; every write is one transaction."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else link_path()
        if not self.path.exists():
            self.path.touch(mode=0o600)
        os.chmod(self.path, 0o600)
        with self._connect() as conn:
            conn.executescript(SCHEMA)

    @contextmanager
    def _connect(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction; ``immediate`` takes the write lock before the first read."""
        with closing(sqlite3.connect(self.path, timeout=30)) as conn:
            conn.execute("PRAGMA foreign_keys = ON")
            with conn:
                if immediate:
                    conn.execute("BEGIN IMMEDIATE")
                yield conn

    def pseudonym_for(self, patient_id: str) -> str:
        """The patient's pseudonym, created (random, unrelated to the ID) on first sight.

        Look-up and creation are one locked transaction, so two imports of the same new
        patient at once agree on one pseudonym."""
        with self._connect(immediate=True) as conn:
            row = conn.execute(
                "SELECT pseudonym FROM patient WHERE patient_id = ?", (patient_id,)
            ).fetchone()
            if row:
                return row[0]
            while True:
                candidate = f"{PSEUDONYM_PREFIX}-{secrets.token_hex(4).upper()}"
                taken = conn.execute(
                    "SELECT 1 FROM patient WHERE pseudonym = ?", (candidate,)
                ).fetchone()
                if not taken:
                    break
            conn.execute(
                "INSERT INTO patient VALUES (?, ?, ?)",
                (candidate, patient_id, dt.datetime.now(dt.UTC).isoformat(timespec="seconds")),
            )
            return candidate

    def patient_id(self, pseudonym: str) -> str | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT patient_id FROM patient WHERE pseudonym = ?", (pseudonym,)
            ).fetchone()
        return row[0] if row else None

    def record_instances(self, instances: list[LinkedInstance]) -> None:
        """Remember the original images of a pseudonym (replacing an earlier pick)."""
        with self._connect() as conn:
            for item in instances:
                conn.execute(
                    "DELETE FROM instance WHERE pseudonym = ? AND modality = ?",
                    (item.pseudonym, item.modality),
                )
                conn.execute(
                    "INSERT OR REPLACE INTO instance VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        item.sop_instance_uid,
                        item.pseudonym,
                        item.modality,
                        item.study_instance_uid,
                        item.series_instance_uid,
                        item.accession_number,
                    ),
                )

    def instances(self, pseudonym: str) -> dict[str, LinkedInstance]:
        """The original GSU and SWE image of a pseudonym, by modality."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM instance WHERE pseudonym = ?", (pseudonym,)
            ).fetchall()
        return {row[2]: LinkedInstance(*row) for row in rows}

    def pseudonyms(self) -> dict[str, str]:
        """Original patient ID → pseudonym, for the admin page's search results."""
        with self._connect() as conn:
            return dict(conn.execute("SELECT patient_id, pseudonym FROM patient").fetchall())

    def claim_send(self, report: SentReport, *, again: bool = False) -> SentReport | None:
        """Record a report as sent before it goes out, unless one was sent already.

        Returns the last report sent earlier when ``again`` is False and there is one (then
        nothing is recorded); the check and the record are one locked transaction, so two
        admins pressing *Send* at once send one report. ``forget_send`` undoes a claim
        whose send failed.
        """
        with self._connect(immediate=True) as conn:
            last = conn.execute(
                "SELECT * FROM sent_report WHERE pseudonym = ? ORDER BY sent_at DESC, rowid DESC",
                (report.pseudonym,),
            ).fetchone()
            if last is not None and not again:
                return SentReport(*last)
            conn.execute(
                "INSERT INTO sent_report VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    report.sop_instance_uid,
                    report.pseudonym,
                    report.study_instance_uid,
                    report.series_instance_uid,
                    report.content_sha256,
                    report.sent_at,
                    report.sent_by,
                ),
            )
        return None

    def forget_send(self, sop_instance_uid: str) -> None:
        with self._connect() as conn:
            conn.execute("DELETE FROM sent_report WHERE sop_instance_uid = ?", (sop_instance_uid,))

    def sent_reports(self, pseudonym: str) -> list[SentReport]:
        """Reports sent for a pseudonym, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM sent_report WHERE pseudonym = ? ORDER BY sent_at, rowid",
                (pseudonym,),
            ).fetchall()
        return [SentReport(*row) for row in rows]


def copy_link(dest: Path, link: PseudonymLink | None = None) -> Path:
    """A consistent copy of the link file (sqlite3 backup API), readable by the owner only.

    Research backups leave the link out; this is the deliberate way to keep a copy.
    """
    source = link or PseudonymLink()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.touch(mode=0o600)
    with closing(sqlite3.connect(source.path)) as src, closing(sqlite3.connect(dest)) as out:
        src.backup(out)
    return dest

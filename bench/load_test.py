"""Load test: N simulated readers grade the whole cohort at once, as the Grading page does.

Each simulated reader repeats what the page does for one case: ask for its next ungraded
image (``next_ungraded`` after the last patient code), then, in one ``Database.write``
transaction, look itself up and call ``save_grade`` and ``save_box``. At the end it goes
back and changes a fraction of its grades (``--revise``), as readers do. Readers run as
threads sharing one ``Database`` (one app process serving several browser sessions) or as
processes with a ``Database`` each (several app processes on one database).

Afterwards every (image, reader) pair must hold exactly one grade and one box with the
values that reader wrote last, and every write exactly one audit row naming that reader.
Any lost, crossed or duplicated update, or any failed save, makes the exit status 1.

    python -m bench.load_test --readers 8 --cases 160 --mode both

By default each mode runs on a fresh SQLite file in a temporary folder; ``--url`` points it
at an empty database instead (PostgreSQL, say), which keeps the synthetic rows afterwards.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.common.boxes import Box
from db.engine import Database
from db.grading import image_info, next_ungraded, save_box, save_grade
from db.migrate import upgrade
from db.models import AuditEvent, CropBox, Grade, Image, Patient
from db.readers import ensure_reader, get_reader

IMAGE_W, IMAGE_H = 640, 480
"""Size recorded for the synthetic images: the demo's screen captures (no files needed)."""
MODES = ("threads", "processes")


@dataclass
class ReaderResult:
    """One simulated reader's saves: latencies in seconds and the errors it met."""

    username: str
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0


@dataclass(frozen=True)
class LoadResult:
    mode: str
    readers: int
    cases: int
    saves: int
    wall_s: float
    errors: list[str]
    latencies: list[float]
    problems: list[str]

    @property
    def saves_per_s(self) -> float:
        return self.saves / self.wall_s if self.wall_s > 0 else float("nan")

    def percentile_ms(self, q: int) -> float:
        if len(self.latencies) < 2:
            return 1000 * (self.latencies[0] if self.latencies else float("nan"))
        return 1000 * statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]


def reader_name(index: int) -> str:
    return f"load_reader_{index:02d}"


def first_grade(image_id: int, index: int) -> int:
    """The grade reader ``index`` gives first: differs between readers, so a grade stored
    under the wrong reader or image shows up as a wrong value."""
    return (image_id * 7 + index * 3) % 4


def revises(image_id: int, index: int, fraction: float) -> bool:
    """Whether reader ``index`` changes its grade of this image in the second pass."""
    return (image_id * 2_654_435_761 + index * 40_503) % 1000 < fraction * 1000


def final_grade(image_id: int, index: int, fraction: float) -> int:
    grade = first_grade(image_id, index)
    return (grade + 1) % 4 if revises(image_id, index, fraction) else grade


def reader_box(image_id: int, index: int) -> Box:
    """A box unique to (image, reader) within the image, for the same crossed-update check."""
    return Box(10 + (image_id * 13 + index * 29) % 300, 10 + (image_id * 5 + index) % 200, 200, 150)


def setup_cohort(db: Database, cases: int, readers: int) -> None:
    """Patients with a GSU and an SWE image row each (no files), and the reader accounts."""

    def work(session: Session) -> None:
        if session.scalar(select(func.count(Patient.id))):
            raise ValueError(
                "The database already holds patients; give the load test an empty one."
            )
        for i in range(cases):
            patient = Patient(code=f"LOAD-{i:04d}", sex="MF"[i % 2], age=70, height_cm=160.0)
            for modality in ("GSU", "SWE"):
                digest = f"{i:08x}{modality.encode().hex()}".ljust(64, "0")
                patient.images.append(
                    Image(
                        modality=modality,
                        sha256=digest,
                        path=f"{digest[:2]}/{digest}.png",
                        width=IMAGE_W,
                        height=IMAGE_H,
                        source_format="png",
                    )
                )
            session.add(patient)
        for index in range(readers):
            ensure_reader(session, reader_name(index), f"Load reader {index}")

    db.write(work)


def _save(session: Session, username: str, image_id: int, grade: int, box: Box | None) -> None:
    """The Grading page's "Save and next" transaction."""
    me = get_reader(session, username)
    if me is None:
        raise LookupError(f"No reader {username!r}")
    save_grade(session, image_id, me, grade)
    if box is not None:
        save_box(session, image_id, me, box)


def _timed_save(
    db: Database, result: ReaderResult, image_id: int, grade: int, box: Box | None
) -> None:
    start = time.perf_counter()
    try:
        db.write(lambda s: _save(s, result.username, image_id, grade, box))
    except Exception as exc:  # a bench reports every failure instead of stopping at one
        result.errors.append(f"{type(exc).__name__}: {exc}")
    result.latencies.append(time.perf_counter() - start)


def simulate_reader(
    db: Database, index: int, revise: float, wait: Callable[[], object] = lambda: None
) -> ReaderResult:
    """Grade every GSU image in the page's order, then revise a fraction of the grades."""
    result = ReaderResult(reader_name(index))
    with db.read() as session:
        me = get_reader(session, result.username)
    if me is None:
        raise LookupError(f"No reader {result.username!r}; run setup_cohort first")
    wait()
    result.started = time.time()
    done: list[int] = []
    last_code = None
    while True:
        with db.read() as session:
            image_id = next_ungraded(session, me.id, after_code=last_code)
            code = image_info(session, image_id).patient_code if image_id else None
        if image_id is None or image_id in done:
            break
        done.append(image_id)
        last_code = code
        _timed_save(db, result, image_id, first_grade(image_id, index), reader_box(image_id, index))
    for image_id in done:
        if revises(image_id, index, revise):
            _timed_save(db, result, image_id, final_grade(image_id, index, revise), None)
    result.finished = time.time()
    return result


def _process_reader(url: str, index: int, revise: float, barrier: Any, queue: Any) -> None:
    db = Database(url)
    try:
        queue.put(simulate_reader(db, index, revise, barrier.wait))
    except Exception as exc:  # report instead of dying silently in the child
        queue.put(ReaderResult(reader_name(index), errors=[f"{type(exc).__name__}: {exc}"]))
    finally:
        db.dispose()


def _run_threads(db: Database, readers: int, revise: float) -> list[ReaderResult]:
    barrier = threading.Barrier(readers)
    with ThreadPoolExecutor(max_workers=readers) as pool:
        futures = [
            pool.submit(simulate_reader, db, index, revise, barrier.wait)
            for index in range(readers)
        ]
        return [f.result() for f in futures]


def _run_processes(url: str, readers: int, revise: float) -> list[ReaderResult]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(readers)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_process_reader, args=(url, index, revise, barrier, queue))
        for index in range(readers)
    ]
    for proc in procs:
        proc.start()
    results = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    return results


def _audit_rows(session: Session) -> dict[tuple[str, int | None], list[tuple[str, str, Any]]]:
    """(entity, entity id) → its audit rows (action, actor, after), oldest first."""
    rows: dict[tuple[str, int | None], list[tuple[str, str, Any]]] = defaultdict(list)
    stmt = select(
        AuditEvent.entity,
        AuditEvent.entity_id,
        AuditEvent.action,
        AuditEvent.actor,
        AuditEvent.after,
    ).order_by(AuditEvent.id)
    for entity, entity_id, action, actor, after in session.execute(stmt):
        rows[(entity, entity_id)].append((action, actor, after or {}))
    return rows


def verify(db: Database, readers: int, revise: float) -> list[str]:
    """Every lost, crossed or duplicated grade, box or audit row, one line each."""
    with db.read() as session:
        index_of = {
            r.id: i
            for i in range(readers)
            if (r := get_reader(session, reader_name(i))) is not None
        }
        gsu = list(session.scalars(select(Image.id).where(Image.modality == "GSU")))
        grades = list(session.scalars(select(Grade)))
        boxes = list(session.scalars(select(CropBox)))
        audits = _audit_rows(session)
    problems = []
    if len(index_of) != readers:
        problems.append(f"{readers - len(index_of)} reader account(s) missing")
    found: dict[tuple[int, int], list[int]] = defaultdict(list)
    for g in grades:
        index = index_of[g.reader_id]
        found[(g.image_id, index)].append(g.grade)
        wanted = [("grade.create", reader_name(index), first_grade(g.image_id, index))]
        if revises(g.image_id, index, revise):
            wanted.append(
                ("grade.update", reader_name(index), final_grade(g.image_id, index, revise))
            )
        got = [
            (action, actor, after.get("grade"))
            for action, actor, after in audits.pop(("grade", g.id), [])
            if after.get("image_id") == g.image_id
        ]
        if got != wanted:
            problems.append(f"grade {g.id}: audit rows {got}, expected {wanted}")
    for image_id in gsu:
        for index in range(readers):
            values = found.get((image_id, index), [])
            expected = final_grade(image_id, index, revise)
            if values != [expected]:
                problems.append(
                    f"image {image_id}, {reader_name(index)}: grade(s) {values}, "
                    f"expected exactly [{expected}]"
                )
    placed: set[tuple[int, int]] = set()
    for b in boxes:
        index = index_of[b.reader_id]
        if (b.image_id, index) in placed:
            problems.append(f"duplicate box: image {b.image_id}, {reader_name(index)}")
        placed.add((b.image_id, index))
        if (b.x, b.y, b.w, b.h) != reader_box(b.image_id, index).as_tuple():
            problems.append(f"crossed box {b.id}: image {b.image_id}, {reader_name(index)}")
        got = [(a, actor) for a, actor, _ in audits.pop(("crop_box", b.id), [])]
        if got != [("box.create", reader_name(index))]:
            problems.append(f"box {b.id}: audit rows {got}, expected one box.create")
    missing = len(gsu) * readers - len(placed)
    if missing:
        problems.append(f"{missing} lost box(es)")
    problems.extend(f"stray audit rows for {key}: {rows}" for key, rows in audits.items())
    return problems


def run(mode: str, url: str, readers: int, cases: int, revise: float) -> LoadResult:
    """Set up the cohort at ``url``, let the readers grade it, then check every row."""
    upgrade(url)
    db = Database(url)
    try:
        setup_cohort(db, cases, readers)
        if mode == "threads":
            results = _run_threads(db, readers, revise)
        else:
            results = _run_processes(url, readers, revise)
        problems = verify(db, readers, revise)
    finally:
        db.dispose()
    started = [r.started for r in results if r.started]
    wall = max(r.finished for r in results) - min(started) if started else 0.0
    errors = [e for r in results for e in r.errors]
    latencies = [t for r in results for t in r.latencies]
    return LoadResult(
        mode, readers, cases, len(latencies) - len(errors), wall, errors, latencies, problems
    )


def table(results: list[LoadResult]) -> str:
    head = ("mode", "readers", "cases", "saves", "wall s", "saves/s", "errors", "p50 ms", "p95 ms")
    rows = [head] + [
        (
            r.mode,
            str(r.readers),
            str(r.cases),
            str(r.saves),
            f"{r.wall_s:.2f}",
            f"{r.saves_per_s:.0f}",
            str(len(r.errors)),
            f"{r.percentile_ms(50):.1f}",
            f"{r.percentile_ms(95):.1f}",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=8, help="simulated readers (default 8)")
    parser.add_argument("--cases", type=int, default=160, help="patients (default 160)")
    parser.add_argument("--mode", choices=[*MODES, "both"], default="threads")
    parser.add_argument(
        "--revise", type=float, default=0.1, help="fraction of grades changed afterwards"
    )
    parser.add_argument("--url", help="an empty database to use instead of a fresh SQLite file")
    args = parser.parse_args(argv)
    if args.readers < 1 or args.cases < 1 or not 0 <= args.revise <= 1:
        parser.error("--readers and --cases must be positive, --revise within 0..1")
    modes = list(MODES) if args.mode == "both" else [args.mode]
    if args.url and len(modes) > 1:
        parser.error("--url takes one --mode: each mode needs an empty database")
    results = []
    with tempfile.TemporaryDirectory(prefix="load-test-") as tmp:
        for mode in modes:
            url = args.url or f"sqlite:///{Path(tmp) / f'{mode}.db'}"
            try:
                results.append(run(mode, url, args.readers, args.cases, args.revise))
            except ValueError as exc:
                parser.error(str(exc))
    print(table(results))
    failed = False
    for result in results:
        for line in result.errors[:10] + result.problems[:20]:
            print(f"{result.mode}: {line}", file=sys.stderr)
        if result.errors or result.problems:
            failed = True
        else:
            print(
                f"{result.mode}: verified {result.readers * result.cases} grades and boxes, "
                "each with its audit rows; no lost, crossed or duplicated update."
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

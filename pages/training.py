"""Training (admins): start a run in the background and watch it, live, from the database.

The page keeps no state of its own: the run rows are the truth, so a reload, a second tab
or another admin sees the same progress (``core.services.job_backends`` starts the run as a
local process or a Redis Queue job; ``db.runs`` reads it back).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.learning.dataset import TASKS, task_title
from core.learning.train import ARCHITECTURES, DEFAULT_EPOCHS, MODES, TrainSettings
from core.learning.weights import (
    WEIGHTS_IMAGENET,
    WEIGHTS_NONE,
    WeightsUnavailableError,
    default_weights,
    found_weight_files,
    missing_imagenet_note,
    user_weights_dir,
)
from core.report.table1 import ARCH_NAMES
from core.services import job_backends, rq_jobs
from core.services.jobs import MAX_CONCURRENT_ENV, max_concurrent_runs
from db.runs import (
    FINISHED_STATUSES,
    active_runs,
    group_progress,
    group_runs,
    list_runs,
    progress_summary,
    recent_groups,
)
from pages.components import get_db, require_admin, runs_table, show_table

require_admin()
db = get_db()
st.title("Training")
on_workers = job_backends.backend_name() == "rq"
QUEUE_AUTO = "auto"


def parse_sizes(text: str) -> tuple[int, int, int] | None:
    if not text.strip():
        return None
    parts = [p.strip() for p in text.replace("/", ",").split(",")]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"Split sizes must be three whole numbers TRAIN,VAL,TEST; got {text!r}.")
    return int(parts[0]), int(parts[1]), int(parts[2])


def weight_label(choice: str) -> str:
    if choice == WEIGHTS_IMAGENET:
        return "ImageNet (pretrained, as in the study)"
    if choice == WEIGHTS_NONE:
        return "None (random initialization)"
    return f"File: {choice}"


weight_options = [WEIGHTS_IMAGENET, WEIGHTS_NONE, *(str(p) for p in found_weight_files())]
missing_note = missing_imagenet_note()
if missing_note:
    st.warning(missing_note)
st.caption(
    f"Weight files of your own (.h5) appear under Weights when placed in {user_weights_dir()}."
)

with st.form("new_run"):
    st.subheader("New run")
    left, middle, right = st.columns(3)
    task = left.selectbox("Task", list(TASKS), format_func=task_title)
    arch = middle.selectbox(
        "Architecture",
        ARCHITECTURES,
        format_func=lambda a: ARCH_NAMES.get(a, a),
        help="Fusion: the GSU backbone.",
    )
    mode = right.radio(
        "Mode",
        MODES,
        horizontal=True,
        help="fast: frozen backbone, head trained on cached features; full: every layer "
        "fine-tuned (the study).",
    )
    left, middle, right = st.columns(3)
    epochs = left.number_input(
        "Epochs",
        min_value=1,
        max_value=500,
        value=DEFAULT_EPOCHS["fast"],
        step=1,
        help=f"Most epochs; early stopping on the validation AUC may end sooner. Defaults: "
        f"{DEFAULT_EPOCHS['fast']} fast, {DEFAULT_EPOCHS['full']} full.",
    )
    weights = middle.selectbox(
        "Weights",
        weight_options,
        index=weight_options.index(default_weights()),
        format_func=weight_label,
        help="ImageNet files are read from the Keras cache, never downloaded.",
    )
    seed = right.number_input("Seed", min_value=0, max_value=2**31 - 1, value=42, step=1)
    left, middle, right = st.columns(3)
    input_size = left.number_input(
        "Input size (pixels, 0 = study sizes)", min_value=0, max_value=512, value=0, step=1
    )
    sizes_text = middle.text_input(
        "Split sizes TRAIN,VAL,TEST", value="", help="Empty: 17 val, 20 test, the rest train."
    )
    k_folds = right.number_input("k-fold (0 = one split)", min_value=0, max_value=10, value=0)
    left, _, _ = st.columns(3)
    test_positives = left.number_input(
        "Positive patients in the test set (0 = stratified)",
        min_value=0,
        max_value=500,
        value=0,
        step=1,
        help="Single split only. The study's test set was enriched: 9 sarcopenic of 20.",
    )
    augment = st.checkbox("Augment training images", value=True)
    queue = QUEUE_AUTO
    if on_workers:
        queue = st.radio(
            "Workers' queue",
            (QUEUE_AUTO, *rq_jobs.QUEUES),
            horizontal=True,
            help="auto: gpu for full mode, cpu for fast mode. A k-fold run becomes one job "
            "per fold, so several workers train its folds at once.",
        )
    submitted = st.form_submit_button("Start training", type="primary")

if submitted:
    try:
        settings = TrainSettings(
            task=task,
            arch=arch,
            mode=mode,
            epochs=int(epochs),
            weights=weights,
            seed=int(seed),
            input_size=int(input_size) or None,
            sizes=parse_sizes(sizes_text),
            k_folds=int(k_folds),
            test_positives=int(test_positives) or None,
            augment=augment,
        )
        settings.check_weights()
    except (ValueError, FileNotFoundError, WeightsUnavailableError) as exc:
        st.error("The run was not started.")
        st.text(str(exc))
    else:
        try:
            run_ids = job_backends.submit_runs(
                db, [settings], queue=None if queue == QUEUE_AUTO else queue
            )
        except rq_jobs.QueueUnavailableError as exc:
            st.error("The run was not started: the job queue cannot be reached.")
            st.text(str(exc))
        else:
            ids = ", ".join(map(str, run_ids))
            st.success(f"Run {ids} queued; training starts in the background when a slot is free.")


@st.fragment(run_every=1.0)
def live_runs() -> None:
    """Polls the database every second; the only state shown is what the rows say.

    Each poll also checks that the trainers are alive: a killed one is failed within a
    second, and the next queued run starts in its slot.
    """
    job_backends.reap(db)
    with db.read() as session:
        runs = active_runs(session)
        recent = list_runs(session, statuses=FINISHED_STATUSES, limit=5)
        groups = [(group, group_runs(session, group.id)) for group in recent_groups(session)]
    st.subheader("Queued and running")
    if on_workers:
        show_workers()
    else:
        st.caption(
            f"At most {max_concurrent_runs()} run(s) train at once ({MAX_CONCURRENT_ENV}); "
            "the others wait in the queue and start on their own."
        )
    if not runs:
        st.caption("No run is queued or training.")
    for run in runs:
        fraction, text = progress_summary(run)
        with st.container(border=True):
            mode = (run.settings or {}).get("mode")
            arch_name = ARCH_NAMES.get(run.arch, run.arch)
            fold = (run.settings or {}).get("fold")
            where = f" · fold {fold + 1} of {run.settings['k_folds']}" if fold is not None else ""
            where += f" · {run.queue} queue" if run.queue else ""
            where += f" · on {run.worker}" if run.worker and run.status == "running" else ""
            st.text(f"{task_title(run.task)} · {arch_name} · {mode} mode · {run.status}{where}")
            st.progress(fraction, text=text)
            if run.cancel_requested:
                st.caption("Cancel requested; the run stops within a second.")
            elif st.button("Cancel", key=f"cancel_{run.id}"):
                job_backends.cancel(db, run.id)
                st.rerun(scope="fragment")
    if groups:
        show_groups(groups)
    st.subheader("Recently finished")
    if recent:
        columns = ["id", "task", "arch", "mode", "status", "test_auc", "seconds", "error"]
        show_table(runs_table(recent)[columns], hide_index=True)
        retry_buttons([run for run in recent if run.status in job_backends.RETRYABLE])
    else:
        st.caption("No finished run yet.")


def show_workers() -> None:
    """The Redis Queue workers alive now, and what each is doing."""
    try:
        workers = job_backends.workers() or []
    except rq_jobs.QueueUnavailableError as exc:
        st.error("The job queue cannot be reached; runs wait until it is back.")
        st.text(str(exc))
        return
    st.caption(
        f"{len(workers)} worker(s) alive. Runs wait in their queue until a worker takes them; "
        "start one with `python -m core worker`."
    )
    if workers:
        show_table(pd.DataFrame(workers), hide_index=True)


def show_groups(groups: list) -> None:
    """Runs submitted together (a grid, a k-fold run over workers), with their progress."""
    st.subheader("Groups")
    for group, members in groups:
        fraction, text = group_progress(members)
        st.progress(fraction, text=f"Group {group.id} · {group.name} · {text}")


def retry_buttons(runs: list) -> None:
    """One click queues a failed or cancelled run again with the same settings."""
    for run in runs:
        if st.button(f"Retry run {run.id}", key=f"retry_{run.id}"):
            try:
                job_backends.retry_run(db, run.id)
            except (ValueError, rq_jobs.QueueUnavailableError) as exc:
                st.error("The run was not queued again.")
                st.text(str(exc))
            else:
                st.rerun()


live_runs()

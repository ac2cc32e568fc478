"""Terminal progress bars for long work started from the command line or a worker."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from tqdm import tqdm


def terminal_bar(**options: Any) -> tqdm:
    """A tqdm bar on stderr that draws only when stderr is a terminal.

    Redirected to a log file or a pipe, it writes nothing at all (``disable=None``), so a
    log holds the command's messages, not hundreds of bar refreshes.
    """
    return tqdm(file=sys.stderr, disable=None, **options)


def progress_bar(description: str) -> Callable[[int, int], None]:
    """A ``terminal_bar`` fed (done, total)."""
    bar: tqdm | None = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = terminal_bar(total=total, desc=description, unit="case")
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update

"""What a command prints besides its result: one-line log messages, TensorFlow kept quiet."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any, Final

TF_LOG_ENV: Final = "TF_CPP_MIN_LOG_LEVEL"
"""TensorFlow's C++ log filter; read once, when TensorFlow is first imported."""


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for a while (C++ code writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's own import with stderr silenced, then steps aside."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        with _stderr_to_devnull():
            self.loader.exec_module(module)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, wrapping its loader in ``_QuietLoader``."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow(verbose: bool) -> None:
    """Keep TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) off the console.

    ``TF_CPP_MIN_LOG_LEVEL`` filters TensorFlow's later messages; the lines it prints while
    loading come before its logging is set up and ignore that variable, so the import itself
    runs with stderr silenced. Commands import TensorFlow lazily, after parsing, so this
    costs nothing for commands that never load it. A level set in the environment by the
    user wins unless ``--verbose`` is given, which shows everything.
    """
    if verbose:
        os.environ[TF_LOG_ENV] = "0"
        return
    os.environ.setdefault(TF_LOG_ENV, "3")
    if "tensorflow" not in sys.modules and not any(
        isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


class _OneLine(logging.Formatter):
    """A log record as one line: the message, without the traceback it may carry."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def configure_logging(verbose: bool) -> None:
    """Warnings as single lines on stderr; ``--verbose`` adds info and full tracebacks."""
    handler = logging.StreamHandler(sys.stderr)
    if verbose or os.environ.get("SARCOPENIA_DEBUG"):
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_OneLine())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])

"""Shared primitives every layer may use: boxes, paths and settings, labels, the image store.

Nothing here imports another part of the app, so ``db/`` and every ``core`` package can
depend on it without a cycle (see the import contracts in ``pyproject.toml``).
"""

from core.common.boxes import Box, clamp_box, validate_box
from core.common.errors import UserError
from core.common.labels import dichotomize_grade, is_sarcopenic, smi
from core.common.store import ImageStore, sha256_hex

__all__ = [
    "Box",
    "ImageStore",
    "UserError",
    "clamp_box",
    "dichotomize_grade",
    "is_sarcopenic",
    "sha256_hex",
    "smi",
    "validate_box",
]

"""What the review services raise: a refused model file, an unreviewable case, no advice yet."""

from __future__ import annotations


class ModelPathError(ValueError):
    """A model file outside the models folder, of the wrong type, or missing."""


class ReviewError(ValueError):
    """A patient, run or image that cannot be reviewed; the message says why."""


class SecondReaderUnavailable(ReviewError):
    """The model's advice cannot be shown (yet) for this image."""

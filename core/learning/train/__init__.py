"""Train one DCNN for one task, end to end, for a queued ``training_run`` row.

The recipe is the study's (Yi et al., Sci Rep 2022): an ImageNet backbone with a new fully
connected head and a sigmoid output, mini-batch Adam at a base learning rate of 1e-4, cut by
a factor of 0.1 when the validation loss plateaus. On top of that: class weights (29 of 141
patients had sarcopenia), early stopping on the validation AUC with the best epoch's weights
restored, seeds for repeatable runs, and DeLong/Wilson intervals on the test metrics.

Two modes:

- ``full``: every layer trains (the study's fine-tuning), on the ``tf.data`` pipeline with
  augmentation.
- ``fast`` (default): the backbone stays frozen and only the head trains. Because a frozen
  backbone maps each image to the same pooled feature vector in every epoch, the backbone
  runs *once* over all patients (plus ``augment_copies`` augmented copies of every image),
  and the epochs train the head on those vectors: an epoch costs well under a second on
  two CPU cores instead of a backbone pass over every image (about 20 s for VGG19 at 112×112
  on the 104 training patients). The head's layers are shared with the full model, so the
  model saved at the end is the whole network (backbone + trained head) that Grad-CAM and
  review load.
  With ``unfreeze_last_block`` the backbone's last block trains too, so features cannot be
  cached and fast mode trains on the pipeline like full mode.

With ``k_folds`` ≥ 2 each fold trains its own model; the test metrics pool the out-of-fold
predictions (every patient tested once), ``metrics["cv"]`` holds the folds' test AUCs with
their mean and SD, and the last fold's model is the one saved (``metrics["saved_fold"]``).

The run row in the database is the only state: progress (throttled to one short write per
``PROGRESS_INTERVAL_S``), per-epoch history, predictions and metrics are all written there,
so a page in another process, a reload or a second tab sees the same thing. Keras and
TensorFlow are imported inside the functions that need them, so the app can import this
package (for ``TrainSettings``) without loading TensorFlow.

Modules: ``settings`` (``TrainSettings``), ``progress`` (the run row's progress and the
process that trains it), ``recipe`` (model, optimizer, callbacks, class weights), ``fast``
(cached backbone features + head), ``folds`` (one fold on either path), ``results``
(metrics and prediction rows) and ``run`` (``run_training``).
"""

from core.learning.train.fast import FeatureCache
from core.learning.train.folds import FoldResult, train_fold
from core.learning.train.progress import (
    PROGRESS_INTERVAL_S,
    Listener,
    ProgressReporter,
    proc_stat,
    process_tag,
)
from core.learning.train.recipe import build_task_model
from core.learning.train.results import subset_metrics
from core.learning.train.run import run_training
from core.learning.train.settings import (
    ARCHITECTURES,
    DEFAULT_EPOCHS,
    DEFAULT_VAL_TEST,
    MODES,
    Mode,
    RunCancelled,
    TrainingError,
    TrainSettings,
)

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_EPOCHS",
    "DEFAULT_VAL_TEST",
    "MODES",
    "PROGRESS_INTERVAL_S",
    "FeatureCache",
    "FoldResult",
    "Listener",
    "Mode",
    "ProgressReporter",
    "RunCancelled",
    "TrainSettings",
    "TrainingError",
    "build_task_model",
    "proc_stat",
    "process_tag",
    "run_training",
    "subset_metrics",
    "train_fold",
]

"""Model-ready arrays per task, patient-level splits, and the ``tf.data`` input pipeline.

Yi et al. (Sci Rep 2022) cropped the ultrasound image area (GSU) or the elastographic colour
box (SWE), normalized the intensity and resampled to 112×112 (GSU) or 84×84 (SWE), and split
*patients* at random into training, validation and test sets. This module does the same from
the database, which is the only source of labels:

- Sarcopenia tasks take only patients whose CT is eligible (``db.cases.case_labels``);
  excluded patients never enter, and ``TaskData.excluded`` says why each one stayed out.
- The echogenicity task takes only patients whose GSU image has a *consensus* grade (label:
  grade ≥ 2, the study's dichotomy). A single reader's grade is never used as a fallback,
  because the study's ground truth was the two readers' consensus.
- Each image is cut with the consensus box, else a reader's box (first reader by username),
  else the automatic box (a stored ``auto`` box, or one detected on the fly), and
  ``TaskData.box_sources`` records which.
- Decoded, cropped, normalized arrays are cached on disk as ``.npz`` files keyed by image
  hash, box and settings, so epochs and reruns never decode a PNG twice.
- ``TaskData.fingerprint`` hashes image hashes, boxes, labels and settings: a training run
  stores it, so a changed box or label shows up as a different data set.

Modules: ``tasks`` (the tasks and ``DatasetSettings``), ``cases`` (which patients, labels and
boxes; the ``ArrayCache``), ``arrays`` (crops and ``load_task_data``), ``splits``
(patient-level splits, stored and loaded) and ``pipeline`` (``tf_dataset``).
"""

from core.learning.dataset.arrays import (
    STIFFNESS_FULL_SCALE_KPA,
    Progress,
    TaskData,
    data_fingerprint,
    decoded_swe_crop,
    input_arrays,
    load_task_data,
)
from core.learning.dataset.cases import (
    DEFAULT_WORKERS,
    ArrayCache,
    Case,
    CaseImage,
    NoPatientsError,
    auto_box,
    collect_cases,
    preset_range,
)
from core.learning.dataset.pipeline import tf_dataset
from core.learning.dataset.splits import (
    Labelled,
    SplitError,
    load_split,
    make_split,
    save_split,
    split_fingerprint,
    subset_indices,
)
from core.learning.dataset.tasks import (
    PIPELINE_VERSION,
    TASK_TITLES,
    TASKS,
    DatasetSettings,
    InputName,
    LabelKind,
    TaskSpec,
    task_title,
)

__all__ = [
    "DEFAULT_WORKERS",
    "PIPELINE_VERSION",
    "STIFFNESS_FULL_SCALE_KPA",
    "TASKS",
    "TASK_TITLES",
    "ArrayCache",
    "Case",
    "CaseImage",
    "DatasetSettings",
    "InputName",
    "LabelKind",
    "Labelled",
    "NoPatientsError",
    "Progress",
    "SplitError",
    "TaskData",
    "TaskSpec",
    "auto_box",
    "collect_cases",
    "data_fingerprint",
    "decoded_swe_crop",
    "input_arrays",
    "load_split",
    "load_task_data",
    "make_split",
    "preset_range",
    "save_split",
    "split_fingerprint",
    "subset_indices",
    "task_title",
    "tf_dataset",
]

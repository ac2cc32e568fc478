"""Per-patient review: every selected model's opinion on one patient, beside the truth.

What a radiologist checks after training (Yi et al., Sci Rep 2022, showed Grad-CAM maps to
argue the networks looked at fascia, fibrosis and fat): the GSU and SWE images with their
crop boxes, the decoded stiffness map, the readers' grades and the consensus, CT SMI and the
sarcopenia truth, and for each model its probability, its predicted label, which subset the
patient was in, and its Grad-CAM on the crop and on the whole scan.

- ``predictor``: models load only from the models folder, in safe mode; one ``ModelCache``
  per process.
- ``cases``: patients are cut exactly as for training (``core.learning.dataset``).
- ``predictions``: outputs cached on disk by (run, model file, image sha, box, settings),
  the cohort summary, and ``run_outputs`` (stored test/validation or cohort probabilities).
- ``predict_job``: a whole cohort is predicted by a background ``python -m core predict``.
- ``patient`` (with ``model_views``): one patient's page, with blinding: a reader who has
  not graded the GSU image sees neither the other grades, nor the consensus, nor the
  echogenicity model (``db.grading`` enforces the same rule).
- ``table``: the cohort review table and its filters.
- ``second_reader``: the echogenicity model's advice once two readers have graded.
"""

from core.services.review.cases import case_images
from core.services.review.errors import ModelPathError, ReviewError, SecondReaderUnavailable
from core.services.review.model_views import ModelView
from core.services.review.patient import (
    STIFFNESS_COLORMAP,
    GradeView,
    ImageView,
    PatientReview,
    StiffnessView,
    is_blinded,
    patient_review,
)
from core.services.review.predict_job import (
    JobStatus,
    predict_job_status,
    run_predict_job,
    start_predict_job,
)
from core.services.review.predictions import (
    NOT_IN_RUN,
    OUTPUT_COLUMNS,
    PREDICT_BATCH,
    ModelOutput,
    Progress,
    cohort_predictions,
    current_inputs,
    predict_cases,
    predict_cohort,
    prediction_root,
    run_outputs,
)
from core.services.review.predictor import (
    MAX_LOADED_MODELS,
    ModelCache,
    RunPredictor,
    checked_model_path,
    load_keras_model,
    load_predictor,
    model_stamp,
    run_dataset_settings,
)
from core.services.review.second_reader import (
    ADVICE_NOTE,
    MIN_READERS_FOR_ADVICE,
    SecondReaderOpinion,
    echogenicity_runs,
    second_reader_opinion,
)
from core.services.review.table import filter_review, finished_runs, review_table

__all__ = [
    "ADVICE_NOTE",
    "MAX_LOADED_MODELS",
    "MIN_READERS_FOR_ADVICE",
    "NOT_IN_RUN",
    "OUTPUT_COLUMNS",
    "PREDICT_BATCH",
    "STIFFNESS_COLORMAP",
    "GradeView",
    "ImageView",
    "JobStatus",
    "ModelCache",
    "ModelOutput",
    "ModelPathError",
    "ModelView",
    "PatientReview",
    "Progress",
    "ReviewError",
    "RunPredictor",
    "SecondReaderOpinion",
    "SecondReaderUnavailable",
    "StiffnessView",
    "case_images",
    "checked_model_path",
    "cohort_predictions",
    "current_inputs",
    "echogenicity_runs",
    "filter_review",
    "finished_runs",
    "is_blinded",
    "load_keras_model",
    "load_predictor",
    "model_stamp",
    "patient_review",
    "predict_cases",
    "predict_cohort",
    "predict_job_status",
    "prediction_root",
    "review_table",
    "run_dataset_settings",
    "run_outputs",
    "run_predict_job",
    "second_reader_opinion",
    "start_predict_job",
]

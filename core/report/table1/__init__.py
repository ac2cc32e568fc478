"""Table 1 of Yi et al. (Sci Rep 2022) rebuilt from stored runs, with intervals and tests.

The study reported AUC, sensitivity, specificity, PPV, NPV and accuracy per modality ×
architecture on 20 test patients, with no confidence intervals and no test between models.
Here every cell carries its interval (Wilson for proportions, DeLong for the AUC, see
``core.stats.metrics``), any two runs scored on the same patients get a paired DeLong test, and the
radiomics baseline and the fusion model sit in the same table.

Labels are always derived *now* from the database (``db.cases.case_labels`` for sarcopenia,
the consensus grade for echogenicity), never copied from training time: a corrected CT or
grade changes the table, and a patient whose label is no longer defined drops out with a
note. Youden's threshold is chosen on the run's *validation* predictions, never on test.

Modules: ``scores`` (the columns: ``RunScores`` from a run or the baseline, with today's
labels), ``table`` (the cells, thresholds and paired DeLong tests) and ``plots`` (ROC and
calibration points and figures).
"""

from core.report.table1.plots import (
    calibration_figure,
    calibration_frame,
    calibration_points,
    delong_figure,
    roc_figure,
    roc_frame,
    roc_points,
)
from core.report.table1.scores import (
    ARCH_NAMES,
    RunNotReadyError,
    RunScores,
    baseline_scores,
    current_labels,
    run_label,
    run_scores,
)
from core.report.table1.table import (
    DETAIL_ROWS,
    PAPER_SOURCE,
    PAPER_TABLE1,
    ROWS,
    THRESHOLD_RULES,
    ThresholdRule,
    delong_matrix,
    delong_matrix_from_scores,
    paired_test,
    resolve_threshold,
    run_metrics,
    scores_metrics,
    table1,
    table1_from_scores,
)

__all__ = [
    "ARCH_NAMES",
    "DETAIL_ROWS",
    "PAPER_SOURCE",
    "PAPER_TABLE1",
    "ROWS",
    "THRESHOLD_RULES",
    "RunNotReadyError",
    "RunScores",
    "ThresholdRule",
    "baseline_scores",
    "calibration_figure",
    "calibration_frame",
    "calibration_points",
    "current_labels",
    "delong_figure",
    "delong_matrix",
    "delong_matrix_from_scores",
    "paired_test",
    "resolve_threshold",
    "roc_figure",
    "roc_frame",
    "roc_points",
    "run_label",
    "run_metrics",
    "run_scores",
    "scores_metrics",
    "table1",
    "table1_from_scores",
]

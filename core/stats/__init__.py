"""The study's statistics: diagnostic metrics, DeLong, reader agreement, calibration, decisions.

Pure functions of arrays, with the intervals the study reports (Wilson for proportions,
DeLong for AUC, bootstrap where no closed form exists); nothing here touches the database.
"""

from core.stats.agreement import kappa_with_ci, pair_agreement
from core.stats.calibration import calibration
from core.stats.decision_curve import net_benefit
from core.stats.delong import delong_auc_ci, delong_test
from core.stats.metrics import diagnostic_metrics, wilson, youden_threshold

__all__ = [
    "calibration",
    "delong_auc_ci",
    "delong_test",
    "diagnostic_metrics",
    "kappa_with_ci",
    "net_benefit",
    "pair_agreement",
    "wilson",
    "youden_threshold",
]

"""Hand-crafted muscle features and the radiomics-style baseline classifier.

Yi et al. (Sci Rep 2022) report that an MLP on radiomic features did worse than the
end-to-end DCNNs. This module gives that baseline a concrete, reproducible form: echo
intensity (the classic quantitative muscle ultrasound measure, mean gray level in 0–255
units) plus gray-level co-occurrence (GLCM) texture, fed to a logistic regression or a
small MLP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from skimage.feature import graycomatrix, graycoprops
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from core.imaging.normalize import to_float01

BaselineKind = Literal["logistic", "mlp"]

ECHO_PERCENTILES = (10, 25, 50, 75, 90)
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")
MLP_HIDDEN = (16,)
"""One small hidden layer: the cohort has about a hundred training patients."""
MLP_BATCH_SIZE = 16
"""Several Adam steps per epoch; with full-batch steps on ~100 patients early stopping fires
while the network still predicts the majority class."""


def echo_intensity(gray_roi: np.ndarray) -> dict[str, float]:
    """Mean, SD and percentiles of gray level in 0–255 units (uint16 and float are rescaled).

    Measure it on the unnormalized image: per-image normalization removes the absolute
    brightness that echo intensity is meant to capture. RGB input is reduced to luma.
    """
    x = to_float01(gray_roi).astype(np.float64) * 255.0
    pcts = np.percentile(x, ECHO_PERCENTILES)
    out = {"echo_mean": float(x.mean()), "echo_sd": float(x.std())}
    out.update({f"echo_p{p}": float(v) for p, v in zip(ECHO_PERCENTILES, pcts, strict=True)})
    return out


def glcm_features(
    gray_roi: np.ndarray,
    distances: Sequence[int] = (1, 2, 4),
    angles: Sequence[float] = (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4),
    levels: int = 32,
) -> dict[str, float]:
    """GLCM texture per distance, averaged over angles (so it does not depend on orientation).

    The ROI is quantized to ``levels`` gray levels first (32 keeps the matrix well filled
    for small crops). Keys are ``glcm_<prop>_d<distance>``, prop in contrast, dissimilarity,
    homogeneity, energy, correlation, asm. A constant ROI gives correlation 1 (scikit-image's
    convention), never NaN.
    """
    if not 2 <= levels <= 256:
        raise ValueError(f"levels must be between 2 and 256; got {levels}.")
    if not distances or any(int(d) != d or d < 1 for d in distances):
        raise ValueError(f"distances must be positive integers; got {tuple(distances)}.")
    if not angles:
        raise ValueError("angles must not be empty.")
    x = to_float01(gray_roi)
    if min(x.shape) <= max(distances):
        raise ValueError(
            f"The ROI ({x.shape[1]}×{x.shape[0]} px) is too small for a GLCM distance of "
            f"{max(distances)} px; use a larger ROI or shorter distances."
        )
    q = np.minimum((x * levels).astype(np.int64), levels - 1).astype(np.uint8)
    glcm = graycomatrix(
        q,
        distances=list(distances),
        angles=list(angles),
        levels=levels,
        symmetric=True,
        normed=True,
    )
    out: dict[str, float] = {}
    for prop in GLCM_PROPS:
        per_distance = graycoprops(glcm, prop).mean(axis=1)
        for d, value in zip(distances, per_distance, strict=True):
            out[f"glcm_{prop.lower()}_d{int(d)}"] = float(value)
    return out


def feature_vector(gsu_roi: np.ndarray, swe_stats: Mapping[str, float] | None) -> dict[str, float]:
    """Echo intensity and GLCM of the GSU ROI, plus SWE statistics prefixed ``swe_`` when given."""
    out = {**echo_intensity(gsu_roi), **glcm_features(gsu_roi)}
    for key, value in (swe_stats or {}).items():
        name = key if key.startswith("swe_") else f"swe_{key}"
        if not math.isfinite(float(value)):
            raise ValueError(f"SWE statistic {key!r} is not a finite number ({value}).")
        out[name] = float(value)
    return out


@dataclass
class BaselineResult:
    """A fitted baseline and its test-set predictions."""

    model_name: str
    auc_test: float
    y_test: np.ndarray
    p_test: np.ndarray
    feature_names: list[str]
    model: Pipeline


def _check_xy(X: np.ndarray, y: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(
            f"X_{name} must be 2-D (patients × features) and y_{name} 1-D of the same length; "
            f"got X_{name} {X.shape} and y_{name} {y.shape}."
        )
    if not np.all(np.isfinite(X)):
        raise ValueError(f"X_{name} contains NaN or infinite values; drop or impute them first.")
    if not set(np.unique(y)).issubset({0, 1}):
        raise ValueError(f"y_{name} must hold only 0 and 1; got values {sorted(set(y.tolist()))}.")
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"y_{name} holds only one class; both classes are needed to fit and to compute AUC."
        )
    return X, y.astype(int)


def fit_baseline(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    kind: BaselineKind,
    seed: int = 0,
    feature_names: Sequence[str] | None = None,
) -> BaselineResult:
    """Fit StandardScaler + (balanced logistic regression | small MLP) and score the test AUC.

    The logistic model weights classes by inverse frequency because sarcopenia is the
    minority (29/141 in the study). The MLP uses early stopping on a 10% stratified hold-out
    of the training set and ``seed`` for weights and split, so the result is reproducible.
    """
    X_train, y_train = _check_xy(X_train, y_train, "train")
    X_test, y_test = _check_xy(X_test, y_test, "test")
    if X_train.shape[1] != X_test.shape[1]:
        raise ValueError(
            f"X_train has {X_train.shape[1]} features but X_test has {X_test.shape[1]}."
        )
    names = (
        list(feature_names)
        if feature_names is not None
        else [f"f{i}" for i in range(X_train.shape[1])]
    )
    if len(names) != X_train.shape[1]:
        raise ValueError(f"{len(names)} feature names given for {X_train.shape[1]} features.")
    if kind == "logistic":
        clf = LogisticRegression(class_weight="balanced", max_iter=1000, random_state=seed)
        model_name = "Logistic regression (balanced)"
    elif kind == "mlp":
        clf = MLPClassifier(
            hidden_layer_sizes=MLP_HIDDEN,
            alpha=1e-2,
            batch_size=MLP_BATCH_SIZE,
            max_iter=1000,
            early_stopping=True,
            validation_fraction=0.1,
            n_iter_no_change=20,
            random_state=seed,
        )
        model_name = f"MLP {MLP_HIDDEN}"
    else:
        raise ValueError(f"kind must be 'logistic' or 'mlp'; got {kind!r}.")
    model = Pipeline([("scale", StandardScaler()), ("clf", clf)])
    model.fit(X_train, y_train)
    p_test = model.predict_proba(X_test)[:, 1]
    return BaselineResult(
        model_name=model_name,
        auc_test=float(roc_auc_score(y_test, p_test)),
        y_test=y_test,
        p_test=p_test,
        feature_names=names,
        model=model,
    )

"""The labeled CSV (one row per patient), its data dictionary, and figure/table downloads.

What a research group takes away from the app: everything the study's analysis needs
(Yi et al., Sci Rep 2022: demographics, CT SMA/SMI with the KNHANES sarcopenia cutoffs and
the one-month CT window, the two readers' echogenicity grades and their consensus, the crop
boxes) plus what this project adds (echo intensity and SWE stiffness statistics, each run's
split and predictions).

- ``labeled``: the table, one bulk query per table then pandas (10,000 patients in a few
  seconds); derived columns come from the functions the app uses, never a stored copy.
- ``features``: image features from an on-disk cache keyed by image sha256 + box.
- ``dictionary``: what each column means.
- ``downloads``: the zip or CSV pair, figures (HTML, PNG) and tables (CSV).
- ``metadata_import``: ``import_metadata`` reads the metadata columns back into a database
  without those patients, so a labeled CSV is also a portable metadata backup.
"""

from core.services.export.dictionary import data_dictionary, dictionary_csv
from core.services.export.downloads import (
    DICTIONARY_NAME,
    LABELED_NAME,
    FigureExportError,
    export_zip,
    figure_html,
    figure_png,
    labeled_csv,
    table_csv,
    write_export,
)
from core.services.export.features import (
    FEATURE_WORKERS,
    FEATURES_VERSION,
    GSU_FEATURES,
    SWE_FEATURES,
    FeatureCache,
    Progress,
    feature_keys,
    image_features,
)
from core.services.export.labeled import (
    COMPUTED_PREFIXES,
    DERIVED_COLUMNS,
    METADATA_COLUMNS,
    SIGNIFICANT_DIGITS,
    labeled_frame,
    round_float_noise,
)
from core.services.export.metadata_import import MetadataImportError, import_metadata

__all__ = [
    "COMPUTED_PREFIXES",
    "DERIVED_COLUMNS",
    "DICTIONARY_NAME",
    "FEATURES_VERSION",
    "FEATURE_WORKERS",
    "GSU_FEATURES",
    "LABELED_NAME",
    "METADATA_COLUMNS",
    "SIGNIFICANT_DIGITS",
    "SWE_FEATURES",
    "FeatureCache",
    "FigureExportError",
    "MetadataImportError",
    "Progress",
    "data_dictionary",
    "dictionary_csv",
    "export_zip",
    "feature_keys",
    "figure_html",
    "figure_png",
    "image_features",
    "import_metadata",
    "labeled_csv",
    "labeled_frame",
    "round_float_noise",
    "table_csv",
    "write_export",
]

"""Patients and their images coming in: the manifest, import bundles, and the synthetic cohort.

``manifest`` checks every value a case carries, ``archive`` opens a zip or folder without
trusting its names, ``importer`` stores a bundle all-or-nothing, and ``cohort`` + ``phantom``
make the built-in synthetic demo cohort (marginals of Yi et al., Sci Rep 2022).
"""

from core.cases.archive import BundleError, open_bundle
from core.cases.cohort import synthetic_cohort
from core.cases.importer import ImportReport, import_bundle, import_upload
from core.cases.manifest import CaseRecord, parse_manifest
from core.cases.phantom import render_case

__all__ = [
    "BundleError",
    "CaseRecord",
    "ImportReport",
    "import_bundle",
    "import_upload",
    "open_bundle",
    "parse_manifest",
    "render_case",
    "synthetic_cohort",
]

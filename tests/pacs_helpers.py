"""A real Orthanc PACS for the PACS tests, and hospital studies made of real screens.

``orthanc`` (session) starts one throwaway Orthanc with ``.ci/start-orthanc`` and shuts it
down at the end; ``start_orthanc`` starts extra ones for tests that stop or restrict a
server. Without Orthanc the tests fail with what to install: they are never skipped.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from core.services.pacs.client import PacsClient
from core.services.pacs.endpoints import Endpoint

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / ".ci" / "start-orthanc"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
ORTHANC = Path("/usr/sbin/Orthanc")
"""Where Debian puts the server, outside an ordinary user's PATH."""
USER, PASSWORD = "pacs-test", "pacs-test-password"
GSU_SCREEN = "dcm4che_YBR_422_Esaote.dcm"
"""Esaote musculoskeletal B-mode: no colour region (the GSU image)."""
SWE_SCREEN = "orthanc_Issue19_ATL_YBR_FULL.dcm"
"""ATL screen with a colour box and bar (stands in for the SWE image)."""


def start_orthanc(root: Path, extra_config: Path | None = None) -> Endpoint:
    """A fresh Orthanc on a free loopback port keeping its files in the empty folder
    ``root``, as the test user's endpoint."""
    if (shutil.which("Orthanc") is None and not ORTHANC.is_file()) or not PLUGIN.is_file():
        pytest.fail(
            "The PACS tests need a real Orthanc with DICOMweb: apt-get install orthanc "
            "orthanc-dicomweb dicom3tools"
        )
    env = {**os.environ, "ORTHANC_ROOT": str(root)}
    if extra_config is not None:
        env["ORTHANC_EXTRA_CONFIG"] = str(extra_config)
    url = subprocess.run(
        [str(START)], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()
    return Endpoint("test-pacs", url, "basic", USER, PASSWORD, timeout_s=20)


def stop_orthanc(endpoint: Endpoint) -> None:
    """Shut the server down (Orthanc's REST call) and wait until it no longer answers."""
    base = endpoint.url.removesuffix("/dicom-web")
    requests.post(f"{base}/tools/shutdown", auth=(USER, PASSWORD), timeout=10)
    for _ in range(100):
        try:
            requests.get(f"{base}/system", auth=(USER, PASSWORD), timeout=1)
        except requests.ConnectionError:
            return
        subprocess.run(["sleep", "0.1"], check=True)
    raise AssertionError(f"Orthanc at {base} did not stop")


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    endpoint = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield endpoint
    stop_orthanc(endpoint)


def hospital_study(
    corpus: Path,
    patient_id: str,
    screens: tuple[str, ...] = (GSU_SCREEN, SWE_SCREEN),
    *,
    accession: str = "",
) -> list[Dataset]:
    """Real scanner screens filed as one new study of ``patient_id`` (fresh UIDs)."""
    study = generate_uid()
    datasets = []
    for number, screen in enumerate(screens, start=1):
        ds = pydicom.dcmread(corpus / "images" / screen)
        ds.PatientID = patient_id
        ds.PatientName = f"Hospital^{patient_id}"
        ds.AccessionNumber = accession or f"ACC{patient_id}"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid()
        ds.SeriesNumber = number
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyDate = ds.get("StudyDate") or dt.date(2024, 3, 1).strftime("%Y%m%d")
        datasets.append(ds)
    return datasets


def clinical_csv(*patient_ids: str) -> str:
    """A clinical CSV keyed by patient ID with valid values for each patient."""
    rows = [f"{pid},F,61,158.0,52.5,2024-03-01,2024-03-10,95.0," for pid in patient_ids]
    header = "patient_id,sex,age,height_cm,weight_kg,us_date,ct_date,l3_sma_cm2,exclusion_reason"
    return "\n".join([header, *rows]) + "\n"


def client_for(endpoint: Endpoint) -> PacsClient:
    return PacsClient(endpoint)

"""A DICOMweb session with a PACS (QIDO-RS, WADO-RS, STOW-RS) that speaks in plain words.

Every failure of the network or the server becomes a :class:`PacsError` whose message
says what happened and what to do (wrong credentials, server down, timeout, refusal), so
the page and the CLI print one sentence instead of a ``requests`` traceback.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from core.common.errors import UserError
from core.services.pacs.endpoints import Endpoint

T = TypeVar("T")
RETRIEVE_MEDIA_TYPES = (("application/dicom", "*"),)
"""Ask for each instance in its stored transfer syntax: no lossy transcoding on the way."""


class PacsError(UserError):
    """The PACS could not be reached or refused a request; the message says what to do."""


def _http_message(endpoint: Endpoint, what: str, response: requests.Response) -> str:
    status = response.status_code
    where = f"the PACS {endpoint.name!r} ({endpoint.url})"
    if status in (401, 403):
        return (
            f"{where} refused the credentials while {what} (HTTP {status}). Check the user "
            "name and password or token set for it (docs/deployment.md), then try again."
        )
    if status == 404:
        return f"{where} has no such resource while {what} (HTTP 404): it may have been deleted."
    detail = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
    return f"{where} answered HTTP {status} while {what}{': ' + detail if detail else ''}."


def dataset_from_json(item: dict[str, Any]) -> Dataset:
    """A QIDO/metadata JSON object as a pydicom Dataset (bulk data left empty)."""
    return Dataset.from_json(item, bulk_data_uri_handler=lambda *_: b"")


class PacsClient:
    """One endpoint's DICOMweb services; create one per task, it holds a requests session."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        session = requests.Session()
        if endpoint.auth == "basic":
            session.auth = (endpoint.username, endpoint.secret)
        elif endpoint.auth == "bearer":
            session.headers["Authorization"] = f"Bearer {endpoint.secret}"
        self._web = DICOMwebClient(endpoint.url, session=session, timeout=endpoint.timeout_s)
        self._web.set_http_retry_params(retry=False)

    def _call(self, what: str, call: Callable[[], T]) -> T:
        where = f"the PACS {self.endpoint.name!r} ({self.endpoint.url})"
        try:
            return call()
        except requests.HTTPError as exc:
            raise PacsError(_http_message(self.endpoint, what, exc.response)) from None
        except requests.Timeout:
            raise PacsError(
                f"{where} did not answer within {self.endpoint.timeout_s:g} s while {what}. "
                "It may be busy: try again later; nothing half-done was kept."
            ) from None
        except requests.ConnectionError:
            raise PacsError(
                f"Could not reach {where} while {what}: the connection was refused or dropped. "
                "Check that the server runs and the address is right, then try again; "
                "nothing half-done was kept."
            ) from None

    def search_studies(self, filters: dict[str, str], limit: int = 200) -> list[Dataset]:
        """QIDO-RS study search; ``filters`` are DICOM keywords (e.g. ``PatientID``)."""
        found = self._call(
            "searching studies",
            lambda: self._web.search_for_studies(
                search_filters=filters,
                limit=limit,
                fields=["ModalitiesInStudy", "StudyDescription", "NumberOfStudyRelatedInstances"],
            ),
        )
        return [dataset_from_json(item) for item in found]

    def instances(self, study_uid: str) -> list[Dataset]:
        """Every instance of a study with its series, modality, SOP class and image size."""
        found = self._call(
            "listing the study's images",
            lambda: self._web.search_for_instances(
                study_instance_uid=study_uid,
                fields=["Modality", "SeriesDescription", "Rows", "Columns", "NumberOfFrames"],
                get_remaining=True,
            ),
        )
        return [dataset_from_json(item) for item in found]

    def retrieve_dataset(self, study_uid: str, series_uid: str, sop_uid: str) -> Dataset:
        """One instance (WADO-RS), in its stored transfer syntax."""
        return self._call(
            "retrieving an instance",
            lambda: self._web.retrieve_instance(
                study_uid, series_uid, sop_uid, media_types=RETRIEVE_MEDIA_TYPES
            ),
        )

    def retrieve(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        """One instance as DICOM file bytes: the same bytes each time, so a repeated import
        finds the same image hash and is a no-op."""
        dataset = self.retrieve_dataset(study_uid, series_uid, sop_uid)
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
        return buffer.getvalue()

    def metadata(self, study_uid: str, series_uid: str, sop_uid: str) -> Dataset:
        """One instance's header without its pixels (WADO-RS metadata)."""
        found = self._call(
            "reading an image's header",
            lambda: self._web.retrieve_instance_metadata(study_uid, series_uid, sop_uid),
        )
        return dataset_from_json(found)

    def store(self, datasets: Sequence[Dataset]) -> None:
        """STOW-RS, then a QIDO look-up of each instance: a PACS that filters instances out
        (e.g. refuses SR documents) may still answer success, so only a found copy counts.
        PacsError when any is missing; nothing is retried."""
        response = self._call("storing the report", lambda: self._web.store_instances(datasets))
        failed = response.get("FailedSOPSequence") if response is not None else None
        missing = [ds for ds in datasets if not self._holds(ds)]
        if failed or missing:
            reasons = ", ".join(str(item.get("FailureReason", "?")) for item in failed or [])
            why = f"failure reason {reasons}" if reasons else "it answered but did not keep it"
            raise PacsError(
                f"The PACS {self.endpoint.name!r} refused the report ({why}). Ask the PACS "
                "administrator whether it accepts Comprehensive 3D SR documents from this app."
            )

    def _holds(self, dataset: Dataset) -> bool:
        found = self._call(
            "checking the stored report",
            lambda: self._web.search_for_instances(
                study_instance_uid=str(dataset.StudyInstanceUID),
                search_filters={"SOPInstanceUID": str(dataset.SOPInstanceUID)},
            ),
        )
        return bool(found)

    def check(self) -> None:
        """One cheap query that proves the address and the credentials work."""
        self._call("checking the connection", lambda: self._web.search_for_studies(limit=1))

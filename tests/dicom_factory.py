"""Build small DICOM files in tests, with the photometric kinds and syntaxes scanners export.

Every file carries protected health information (PHI) in the places a real export does, so
the de-identification tests can search for it, and a ``SequenceOfUltrasoundRegions`` item
whose calibration must survive. ``expected_pixels`` gives what a correct decoder returns.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import dcmread
from pydicom.filewriter import dcmwrite, write_file_meta_info
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

ROWS, COLS = 64, 80
UID_ROOT = "1.2.826.0.1.3680043.8.498.7755."
PHI_STRINGS = (
    "Doe",
    "Jane",
    "123456",
    "19570412",
    "Real Hospital",
    "Main Street",
    "MRN998877",
    "House^Gregory",
    "Quinn",
    "Ratched",
    "USROOM7",
    "ACC778899",
    "STUDY4455",
    "SN31337",
    "Tech^Tina",
)
"""Every PHI value the factory writes; none may survive de-identification."""
ORIGINAL_SOP_INSTANCE_UID = UID_ROOT + "3.1"
US_REGION = {
    "RegionSpatialFormat": 1,
    "RegionDataType": 1,
    "RegionFlags": 0,
    "RegionLocationMinX0": 4,
    "RegionLocationMinY0": 2,
    "RegionLocationMaxX1": COLS - 5,
    "RegionLocationMaxY1": ROWS - 3,
    "PhysicalUnitsXDirection": 3,
    "PhysicalUnitsYDirection": 3,
    "PhysicalDeltaX": 0.0125,
    "PhysicalDeltaY": 0.0125,
    "ReferencePixelX0": 40,
    "ReferencePixelY0": 2,
}
_COMPRESSED_BY_PYDICOM = {RLELossless, JPEG2000Lossless}


def rgb_pattern(frame: int = 0) -> np.ndarray:
    """Smooth RGB ramps (lossy codecs keep them close); each frame shifts the blue channel."""
    y, x = np.mgrid[0:ROWS, 0:COLS]
    red = 30 + 2 * x
    green = 40 + 3 * y
    blue = 200 - x - y + 12 * frame
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def gray_pattern(bits: int = 8, frame: int = 0) -> np.ndarray:
    """A smooth ramp; the 16-bit one uses values above 255 so a lost high byte shows."""
    y, x = np.mgrid[0:ROWS, 0:COLS]
    base = 20 + 2 * x + y + 10 * frame
    if bits == 16:
        return (base * 256 + x).astype(np.uint16)
    return base.astype(np.uint8)


def palette_lut() -> np.ndarray:
    """A 256-entry, 16-bit RGB palette, shape (256, 3): a color ramp no gray LUT can mimic."""
    ramp = np.arange(256, dtype=np.uint32)
    red = ramp * 257
    green = (255 - ramp) * 257
    blue = (ramp // 2 + 64) * 257
    return np.stack([red, green, blue], axis=-1).astype(np.uint16)


def expected_pixels(photometric: str, bits: int = 8, frame: int = 0) -> np.ndarray:
    """What ``decode_image`` should return for a file from :func:`make_dicom`."""
    if photometric in {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT"}:
        return rgb_pattern(frame)
    if photometric == "PALETTE COLOR":
        return (palette_lut()[gray_pattern(8, frame)] >> 8).astype(np.uint8)
    return gray_pattern(bits, frame)


def make_dicom(
    photometric: str,
    bits: int = 8,
    transfer_syntax: str = ExplicitVRLittleEndian,
    frames: int = 1,
    with_pixels: bool = True,
    with_us_regions: bool = True,
    phi: bool = True,
    declared_transfer_syntax: str | None = None,
) -> bytes:
    """A Part 10 ultrasound DICOM file as bytes.

    ``photometric``: RGB, YBR_FULL (native), YBR_FULL_422 (JPEG baseline only), YBR_RCT
    (RGB through JPEG 2000 lossless with the colour transform), MONOCHROME1, MONOCHROME2,
    PALETTE COLOR. ``transfer_syntax``: Explicit VR Little Endian, RLE Lossless, JPEG 2000
    Lossless or JPEG Baseline. ``declared_transfer_syntax`` writes another UID into the file
    meta than the one the data is encoded in, to build broken files.
    """
    ds = _header(frames, phi, with_us_regions)
    color = photometric not in {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"}
    ds.Rows, ds.Columns = ROWS, COLS
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if color:
        ds.PlanarConfiguration = 0
    if photometric == "PALETTE COLOR":
        _add_palette(ds)
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.FrameTime = 33.3
        ds.FrameIncrementPointer = 0x00181063

    encoding = (
        ExplicitVRLittleEndian if transfer_syntax in _COMPRESSED_BY_PYDICOM else (transfer_syntax)
    )
    ds.file_meta = _file_meta(ds, encoding)
    if with_pixels:
        stack = np.stack([_stored_frame(photometric, bits, f) for f in range(frames)])
        if transfer_syntax == JPEGBaseline8Bit:
            ds.PixelData = encapsulate([_jpeg_frame(frame) for frame in stack])
        else:
            ds.PixelData = (stack[0] if frames == 1 else stack).tobytes()
        if transfer_syntax in _COMPRESSED_BY_PYDICOM:
            ds.compress(transfer_syntax, generate_instance_uid=False)
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    if declared_transfer_syntax is not None:
        return _forge_transfer_syntax(buf.getvalue(), declared_transfer_syntax)
    return buf.getvalue()


def _forge_transfer_syntax(data: bytes, uid: str) -> bytes:
    """Swap the file meta's Transfer Syntax UID and leave the encoded dataset as it was.

    pydicom refuses to write such a file, and that is the point: scanners and converters
    still produce them, and the reader must refuse them.
    """
    group_length = int.from_bytes(data[140:144], "little")
    meta_end = 144 + group_length
    old_meta = dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
    old_meta.TransferSyntaxUID = uid
    out = DicomBytesIO()
    write_file_meta_info(out, old_meta, enforce_standard=True)
    return data[:132] + out.getvalue() + data[meta_end:]


def _header(frames: int, phi: bool, with_us_regions: bool) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage if frames > 1 else UltrasoundImageStorage
    ds.SOPInstanceUID = ORIGINAL_SOP_INSTANCE_UID
    ds.StudyInstanceUID = UID_ROOT + "1"
    ds.SeriesInstanceUID = UID_ROOT + "2"
    ds.FrameOfReferenceUID = UID_ROOT + "4"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.Modality = "US"
    ds.Manufacturer = "GE Healthcare"
    ds.ManufacturerModelName = "LOGIQ E9"
    ds.StudyDate = ds.SeriesDate = "20240315"
    ds.AcquisitionDate = ds.ContentDate = "20240316"
    ds.StudyTime = "101500"
    ds.PatientSex = "F"
    ds.PatientAge = "067Y"
    ds.PatientName = "Doe^Jane" if phi else ""
    ds.PatientID = "123456" if phi else ""
    ds.PatientBirthDate = "19570412" if phi else ""
    ds.ReferringPhysicianName = "House^Gregory" if phi else ""
    ds.AccessionNumber = "ACC778899" if phi else ""
    ds.StudyID = "STUDY4455" if phi else ""
    if phi:
        ds.PatientAddress = "1 Main Street, Springfield"
        ds.OtherPatientIDs = "MRN998877"
        ds.InstitutionName = "Real Hospital"
        ds.InstitutionAddress = "2 Real Hospital Road"
        ds.PerformingPhysicianName = "Quinn^Michaela"
        ds.OperatorsName = "Nurse^Ratched"
        ds.ContentCreatorName = "Tech^Tina"
        ds.StationName = "USROOM7"
        ds.DeviceSerialNumber = "SN31337"
        ds.StudyDescription = "MSK RF Doe Jane"
        block = ds.private_block(0x0009, "ACME US 1.0", create=True)
        block.add_new(0x01, "LO", "Doe Jane private note")
        ds.add_new(0x60000022, "LO", "Doe overlay label")
        ref = Dataset()
        ref.ReferencedSOPClassUID = UltrasoundImageStorage
        ref.ReferencedSOPInstanceUID = UID_ROOT + "9"
        ref.OperatorsName = "Doe^Nested"
        ds.ReferencedImageSequence = Sequence([ref])
    if with_us_regions:
        region = Dataset()
        for keyword, value in US_REGION.items():
            setattr(region, keyword, value)
        ds.SequenceOfUltrasoundRegions = Sequence([region])
    return ds


def _file_meta(ds: Dataset, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.SourceApplicationEntityTitle = "REALHOSP_US7"
    return meta


def _stored_frame(photometric: str, bits: int, frame: int) -> np.ndarray:
    if photometric == "YBR_FULL":
        return convert_color_space(rgb_pattern(frame), "RGB", "YBR_FULL")
    if photometric in {"RGB", "YBR_FULL_422", "YBR_RCT"}:
        return rgb_pattern(frame)
    if photometric == "MONOCHROME1":
        return ((1 << bits) - 1 - gray_pattern(bits, frame).astype(np.int64)).astype(
            np.uint16 if bits == 16 else np.uint8
        )
    return gray_pattern(bits, frame)


def _jpeg_frame(frame: np.ndarray) -> bytes:
    """JPEG baseline via Pillow; colour frames are YCbCr 4:2:2, as YBR_FULL_422 requires."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=95, subsampling=1)
    return buf.getvalue()


def _add_palette(ds: Dataset) -> None:
    lut = palette_lut()
    for channel, name in enumerate(("Red", "Green", "Blue")):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{name}PaletteColorLookupTableData", lut[:, channel].tobytes())

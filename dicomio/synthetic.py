"""Synthetic scans for the demo and the benchmarks: CT-like volumes, DICOM series."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from .phantoms import TISSUE_HU, tissue_map

__all__ = ["phantom_volume", "write_series"]

_SOP_CLASSES = {
    ("CT", False): CTImageStorage,
    ("CT", True): EnhancedCTImageStorage,
    ("MR", False): MRImageStorage,
    ("MR", True): EnhancedMRImageStorage,
}
_STUDY_DATE = "20000101"
_STUDY_TIME = "120000"


def phantom_volume(shape: Sequence[int] = (32, 128, 128), seed: int = 0) -> np.ndarray:
    """A CT-like volume: the anatomy of :func:`~dicomio.phantoms.ct_phantom` in HU
    plus white noise, cheap at any size (benchmarks write 300 x 512 x 512 series).

    Args:
        shape: (z, y, x) voxels. Default (32, 128, 128).
        seed: picks the anatomy (as ``ct_phantom``'s seed does: the same organs,
            without their texture and lesions) and the Gaussian noise (sigma
            20 HU). Default 0.

    Returns:
        float32 array of ``shape`` in Hounsfield units.

    Raises:
        ValueError: when ``shape`` is not three positive sizes.
    """
    if len(shape) != 3 or any(int(s) <= 0 for s in shape):
        raise ValueError(f"shape must be three positive sizes (z, y, x), got {shape!r}")
    size = tuple(int(s) for s in shape)
    labels, tissues = tissue_map(size, seed=seed)
    volume = np.array([TISSUE_HU[t] for t in tissues], dtype=np.float32)[labels]
    rng = np.random.default_rng([seed, 1])
    volume += 20.0 * rng.standard_normal(size, dtype=np.float32)
    return volume


def _rescale_for(volume: np.ndarray, modality: str) -> tuple[float, float]:
    """(slope, intercept) mapping the volume onto int16 with slope 1 when it fits."""
    lo, hi = float(volume.min()), float(volume.max())
    intercept = -1024.0 if modality == "CT" else 0.0
    if lo - intercept >= -32768 and hi - intercept <= 32767:
        return 1.0, intercept
    slope = max((hi - lo) / 65000.0, 1e-6)
    return slope, lo + 32500.0 * slope


def _unit(vector: np.ndarray, what: str) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm < 1e-6:
        raise ValueError(f"orientation {what} cosines must be a non-zero vector")
    return vector / norm


def _ds(values: Iterable[float]) -> list[str]:
    # DS is at most 16 characters; repr-like formatting keeps round trips exact enough.
    return [f"{float(v):.10g}"[:16] for v in values]


def write_series(
    out_dir: str | os.PathLike[str],
    volume_hu: np.ndarray,
    *,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    modality: str = "CT",
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    series_uid: str | None = None,
    study_uid: str | None = None,
    patient_id: str = "ANON",
    transfer_syntax: str = ExplicitVRLittleEndian,
    multiframe: bool = False,
    description: str = "Synthetic series",
) -> list[Path]:
    """Write a volume as a valid CT or MR DICOM series.

    Pixels are stored as int16 with Rescale Slope/Intercept (slope 1 and
    intercept -1024 for CT whenever the values fit). Slice ``k`` lies at
    ``origin + k * spacing_mm[0] * (row x column cosines)``. UIDs not given are
    derived from the content, so equal inputs give byte-identical files.
    Existing files are never overwritten.

    Args:
        out_dir: folder to write into; created when missing.
        volume_hu: (z, y, x) array in original units (HU for CT).
        spacing_mm: (z, y, x) voxel spacing in mm. Default (1, 1, 1).
        modality: ``"CT"`` or ``"MR"``. Default ``"CT"``.
        origin: Image Position (Patient) of slice 0 in mm. Default (0, 0, 0).
        orientation: Image Orientation (Patient), row then column direction
            cosines. Default axial (1, 0, 0, 0, 1, 0).
        series_uid: Series Instance UID; derived from the content when ``None``.
        study_uid: Study Instance UID; derived from the content when ``None``.
        patient_id: Patient ID. Default ``"ANON"``.
        transfer_syntax: native little-endian syntaxes, deflated, or any
            compressed syntax pydicom can encode here (RLE Lossless, JPEG 2000
            Lossless). Default Explicit VR Little Endian.
        multiframe: write one Enhanced CT/MR object with per-frame functional
            groups instead of one file per slice. Default ``False``.
        description: Series Description. Default ``"Synthetic series"``.

    Returns:
        Paths of the written files, in slice order.

    Raises:
        ValueError: on a volume that is not 3-D and finite, a bad spacing,
            orientation or modality.
        FileExistsError: when a file to be written already exists.
    """
    volume = np.asarray(volume_hu)
    if volume.ndim != 3 or 0 in volume.shape:
        raise ValueError(
            f"volume_hu must be a non-empty (z, y, x) array, got {volume.shape}"
        )
    if not np.isfinite(volume).all():
        raise ValueError("volume_hu must be finite")
    if modality not in ("CT", "MR"):
        raise ValueError(f"modality must be 'CT' or 'MR', got {modality!r}")
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(
            f"spacing_mm must be three positive sizes in mm, got {spacing_mm!r}"
        )
    if len(origin) != 3 or len(orientation) != 6:
        raise ValueError("origin needs 3 values and orientation 6")
    row = _unit(np.asarray(orientation[:3], dtype=np.float64), "row")
    col = _unit(np.asarray(orientation[3:], dtype=np.float64), "column")
    if abs(float(row @ col)) > 1e-3:
        raise ValueError("orientation row and column cosines must be orthogonal")
    normal = np.cross(row, col)
    syntax = UID(transfer_syntax)

    slope, intercept = _rescale_for(volume, modality)
    stored = np.clip(np.rint((volume - intercept) / slope), -32768, 32767).astype("<i2")
    digest = hashlib.sha256(stored.tobytes())
    for value in (*spacing, *origin, *orientation, modality, patient_id, description):
        digest.update(repr(value).encode())
    seed = digest.hexdigest()
    study_uid = study_uid or generate_uid(entropy_srcs=[seed, "study"])
    series_uid = series_uid or generate_uid(entropy_srcs=[seed, "series"])
    frame_of_reference = generate_uid(entropy_srcs=[seed, "frame-of-reference"])
    origin_v = np.asarray(origin, dtype=np.float64)
    positions = [origin_v + k * spacing[0] * normal for k in range(volume.shape[0])]

    ds = _base_dataset(
        modality, multiframe, volume.shape, spacing, syntax, slope, intercept
    )
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_of_reference
    ds.PatientID = patient_id
    ds.SeriesDescription = description
    iop = _ds([*row, *col])

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if multiframe:
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[seed, "multiframe"])
        ds.InstanceNumber = 1
        ds.NumberOfFrames = volume.shape[0]
        shared = ds.SharedFunctionalGroupsSequence[0]
        shared.PlaneOrientationSequence = DicomSequence([Dataset()])
        shared.PlaneOrientationSequence[0].ImageOrientationPatient = iop
        frames = []
        for k, position in enumerate(positions):
            item = Dataset()
            item.PlanePositionSequence = DicomSequence([Dataset()])
            item.PlanePositionSequence[0].ImagePositionPatient = _ds(position)
            content = Dataset()
            content.StackID = "1"
            content.InStackPositionNumber = k + 1
            content.DimensionIndexValues = [1, k + 1]
            item.FrameContentSequence = DicomSequence([content])
            frames.append(item)
        ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
        path = out / "ENHANCED.dcm"
        _write(ds, path, stored, syntax)
        return [path]

    ds.ImageOrientationPatient = iop
    paths = []
    for k, position in enumerate(positions):
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[seed, "slice", str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = _ds(position)
        ds.SliceLocation = _ds([float(position @ normal)])[0]
        path = out / f"IM{k + 1:05d}.dcm"
        _write(ds, path, stored[k], syntax)
        paths.append(path)
    return paths


def _base_dataset(
    modality: str,
    multiframe: bool,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    syntax: UID,
    slope: float,
    intercept: float,
) -> Dataset:
    sop_class = _SOP_CLASSES[(modality, multiframe)]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.PatientName = "Synthetic^Phantom"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = _STUDY_DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = _STUDY_TIME
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.StudyDescription = "Synthetic study"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "dicomio.synthetic"
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(shape[1]), int(shape[2])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.AcquisitionNumber = 1
    ds.LossyImageCompression = "00"
    pixel_spacing = _ds(spacing[1:])
    thickness = _ds(spacing[:1])[0]
    rescale = _ds([slope, intercept])
    if modality == "CT":
        ds.KVP = "120"
    else:
        ds.MagneticFieldStrength = "1.5"
        ds.EchoTime = "10"
        ds.RepetitionTime = "500"
        ds.EchoTrainLength = 1
    if not multiframe:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PixelSpacing = pixel_spacing
        ds.SliceThickness = thickness
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "HU" if modality == "CT" else "US"
        if modality == "MR":
            ds.ScanningSequence = "SE"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "2D"
        return ds
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.ContentQualification = "RESEARCH"
    ds.PresentationLUTShape = "IDENTITY"
    ds.VolumetricProperties = "VOLUME"
    ds.PixelPresentation = "MONOCHROME"
    ds.InstanceCreationDate, ds.InstanceCreationTime = _STUDY_DATE, _STUDY_TIME
    if modality == "MR":
        ds.ImagedNucleus = "1H"
        ds.MRAcquisitionType = "2D"
    dimension = Dataset()
    dimension.DimensionOrganizationUID = generate_uid(
        entropy_srcs=["dicomio-dimension"]
    )
    ds.DimensionOrganizationSequence = DicomSequence([dimension])
    stack = Dataset()
    stack.DimensionOrganizationUID = dimension.DimensionOrganizationUID
    stack.DimensionIndexPointer = 0x00209056  # Stack ID
    stack.FunctionalGroupPointer = 0x00209111  # Frame Content Sequence
    in_stack = Dataset()
    in_stack.DimensionOrganizationUID = dimension.DimensionOrganizationUID
    in_stack.DimensionIndexPointer = 0x00209057  # In-Stack Position Number
    in_stack.FunctionalGroupPointer = 0x00209111
    ds.DimensionIndexSequence = DicomSequence([stack, in_stack])
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = pixel_spacing
    measures.SliceThickness = thickness
    measures.SpacingBetweenSlices = thickness
    shared.PixelMeasuresSequence = DicomSequence([measures])
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = rescale
    transform.RescaleType = "HU" if modality == "CT" else "US"
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    return ds


def _write(ds: Dataset, path: Path, stored: np.ndarray, syntax: UID) -> None:
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if syntax.is_encapsulated:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = stored.tobytes()
        ds.compress(syntax, stored, generate_instance_uid=False)
        ds["PixelData"].VR = "OB"
    else:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = stored.tobytes()
        ds["PixelData"].VR = "OW"
    with path.open("xb") as fh:
        ds.save_as(fh, enforce_file_format=True)

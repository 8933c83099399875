"""Build derived (denoised, residual) DICOM series from source headers and a volume.

Every UID this module makes starts with :data:`UID_ROOT`, a UUID-derived root
(``2.25.<UUID as integer>``, PS3.5 B.2, no registration needed) that belongs to
this application. UIDs are hashed from the output's checksum and the source
UIDs, so exporting the same result twice yields the same series, and a new model
version or new output always yields new UIDs.

Outputs are classic CT or MR Image instances, one per slice, that satisfy their IOD
whatever the source lacks: Type 2 attributes present (empty when unknown), Type 1 and
1C ones derived or refused with :class:`DerivedSeriesError` naming them. Frames of
enhanced sources arrive as classic headers (:mod:`.frames`) and are referenced by
frame number.
"""

from __future__ import annotations

import copy
import io
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from pydicom import dcmwrite
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from .errors import DicomIOError
from .frames import FrameSource
from .reader import OWN_MANUFACTURER

__all__ = [
    "DENOISED",
    "RESIDUAL",
    "UID_ROOT",
    "DerivedSeriesError",
    "Provenance",
    "build_derived_series",
    "deidentify_series",
    "device_uid",
    "to_bytes",
]

#: Root of every UID this application creates (series, instance, device, ...).
UID_ROOT = "2.25.245668327531281547092205570673594397792."
IMPLEMENTATION_CLASS_UID = UID(UID_ROOT + "1")
IMPLEMENTATION_VERSION_NAME = "RADIOLOGY_DN_1"
MANUFACTURER = OWN_MANUFACTURER

DENOISED = "denoised"
RESIDUAL = "residual"

# (code value, scheme, meaning). CID 7203 has no "noise reduction" concept; smoothing
# is the nearest, and DerivationDescription says exactly what was done.
_DERIVATION_CODES = {
    DENOISED: ("113087", "DCM", "Smoothing"),
    RESIDUAL: ("113062", "DCM", "Pixel by pixel subtraction"),
}
_SOURCE_IMAGE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")
_ACQUISITION_EQUIPMENT = ("109101", "DCM", "Acquisition Equipment")
_PROCESSING_EQUIPMENT = ("109102", "DCM", "Processing Equipment")
_DEIDENTIFYING_EQUIPMENT = ("109104", "DCM", "De-identifying Equipment")
_BASIC_PROFILE = ("113100", "DCM", "Basic Application Confidentiality Profile")
_CLEAN_DESCRIPTORS = ("113105", "DCM", "Clean Descriptors Option")
_MODIFIED_DATES = (
    "113107",
    "DCM",
    "Retain Longitudinal Temporal Information Modified Dates Option",
)
_SERIES_NUMBER_OFFSET = {DENOISED: 1000, RESIDUAL: 2000}

# Type 2 attributes of the CT and MR Image IODs (PS3.3 A.3, A.4): written empty when
# the source does not know them. Patient, General Study, Frame of Reference, Image
# Plane, then the modality's own image module.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "PositionReferenceIndicator",
    "SliceThickness",
)
_TYPE2_BY_MODALITY = {
    "CT": ("KVP", "AcquisitionNumber"),
    "MR": ("ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength"),
}
# Type 1 attributes no derivation can invent: without them the image cannot be placed
# or (for MR) described, so the export is refused naming the first one missing.
_TYPE1_BY_MODALITY = {
    "CT": ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"),
    "MR": (
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "ScanningSequence",
        "SequenceVariant",
    ),
}
# The source's own equipment, kept as its Acquisition Equipment item when the derived
# instance's General Equipment names this application.
_SOURCE_EQUIPMENT = (
    "Manufacturer",
    "InstitutionName",
    "InstitutionAddress",
    "StationName",
    "InstitutionalDepartmentName",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "SoftwareVersions",
)
_GEOMETRY_DS = (
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "SliceLocation",
)
_CT_IMAGE_TYPE_3 = ("AXIAL", "LOCALIZER")
#: ImageType value 3 of an MR image whose source gives none (a defined term).
_MR_IMAGE_TYPE_3 = "OTHER"
_IDENTITY_REMOVED_UNRECORDED = "removed before import; method not recorded"

# Source attributes that would be wrong once the pixels change, or that belong to
# the source's own derivation history.
_DROPPED = (
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "ModalityLUTSequence",
    "IconImageSequence",
    "SourceImageSequence",
    "DerivationCodeSequence",
    "DerivationDescription",
    "InstanceCreatorUID",
    "DataSetTrailingPadding",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
    "PaletteColorLookupTableUID",
    "ICCProfile",
    "ColorSpace",
)

# Basic Profile (PS3.15 Table E.1-1) text attributes the UID/name/ID/date handlers
# of dicognito leave alone: removed (X) or emptied when the IOD needs them (Z).
_DEID_REMOVE = (
    "StudyDescription",
    "ImageComments",
    "AdditionalPatientHistory",
    "PatientComments",
    "RequestedProcedureDescription",
    "PerformedProcedureStepDescription",
    "AdmittingDiagnosesDescription",
    "AcquisitionComments",
    "StudyComments",
    "ProtocolName",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "EthnicGroup",
    "Allergies",
    "MedicalAlerts",
    "PregnancyStatus",
    "SmokingStatus",
    "DeviceSerialNumber",
    "OtherPatientIDsSequence",
    "ReferencedPatientSequence",
    "ReferencedStudySequence",
    "RequestAttributesSequence",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
)
_DEID_EMPTY = ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyID")


class DerivedSeriesError(DicomIOError):
    """The derived series cannot be built from these sources.

    Cause: the volume does not match the sources (slice count, rows, columns),
    a source is an enhanced multi-frame object, or the values are not finite.
    Fix: the message names the mismatch; export from the job that produced the
    volume, or convert enhanced sources to classic single-frame images first.
    """


@dataclass(frozen=True)
class Provenance:
    """Who made the derived pixels, written into the DICOM header.

    Args:
        model_name: model (bundle) name, e.g. ``"redcnn-ct"``.
        model_version: semantic version of the bundle.
        weights_sha256: hex SHA-256 of the weights; the device UID is derived from it.
        output_sha256: hex SHA-256 of the stored output; instance UIDs derive from it.
        created: when the output was made (ContentDate/Time, SeriesDate/Time).
        software_version: version of this application.
        parameters: inference parameters, summarised in DerivationDescription.
        record: full provenance record, stored as JSON in a private element.
    """

    model_name: str
    model_version: str
    weights_sha256: str
    output_sha256: str
    created: datetime
    software_version: str = "unknown"
    parameters: dict = field(default_factory=dict)
    record: str = ""


PRIVATE_CREATOR = "RADIOLOGY_DENOISE 1"
_PRIVATE_GROUP = 0x0071


def device_uid(weights_sha256: str, root: str = UID_ROOT) -> str:
    """Device UID of a model version: the same weights always give the same UID."""
    return generate_uid(prefix=root, entropy_srcs=["device", weights_sha256])


def _code(value: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value
    return item


def _lo(text: str) -> str:
    return text[:64]


def _ds(value: float) -> str:
    return f"{float(value):.10g}"[:16]


def _encode(
    volume: np.ndarray, modality: str, kind: str
) -> tuple[np.ndarray, float, float]:
    """(int16 stored values, slope, intercept): slope 1 whenever the range fits."""
    lo, hi = float(volume.min()), float(volume.max())
    intercept = -1024.0 if modality == "CT" and kind == DENOISED else 0.0
    if lo - intercept >= -32768 and hi - intercept <= 32767:
        slope = 1.0
    else:
        slope = max((hi - lo) / 65000.0, 1e-6)
        intercept = lo + 32500.0 * slope
    stored = np.clip(np.rint((volume - intercept) / slope), -32768, 32767)
    return stored.astype("<i2"), slope, intercept


def _describe(provenance: Provenance, kind: str, unit: str) -> tuple[str, str]:
    model = f"{provenance.model_name} {provenance.model_version}"
    params = ", ".join(f"{k}={v}" for k, v in sorted(provenance.parameters.items()))
    what = (
        f"Denoised by model {model}"
        if kind == DENOISED
        else f"Residual (original minus denoised) of model {model}"
    )
    derivation = (
        f"{what} (weights sha256 {provenance.weights_sha256}; parameters "
        f"{params or 'default'}; software {MANUFACTURER} {provenance.software_version}"
        f"); values in {unit} through Rescale Slope/Intercept"
    )
    label = "Denoised" if kind == DENOISED else "Residual"
    return _lo(f"{label} {model}"), derivation[:1024]


def _contributing_equipment(provenance: Provenance, root: str) -> Dataset:
    """One IHE AI Results style Contributing Equipment item for the model."""
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = DicomSequence([_code(_PROCESSING_EQUIPMENT)])
    item.Manufacturer = MANUFACTURER
    item.ManufacturerModelName = _lo(provenance.model_name)
    item.SoftwareVersions = [
        _lo(provenance.model_version),
        _lo(f"{MANUFACTURER} {provenance.software_version}"),
    ]
    item.DeviceUID = device_uid(provenance.weights_sha256, root)
    item.ContributionDateTime = provenance.created.strftime("%Y%m%d%H%M%S")
    item.ContributionDescription = (
        f"AI denoising: {provenance.model_name} {provenance.model_version}, "
        f"weights sha256 {provenance.weights_sha256}"
    )[:1024]
    return item


def _check(sources: Sequence[FrameSource], volume: np.ndarray) -> None:
    if volume.ndim != 3:
        raise DerivedSeriesError(f"volume must be (z, y, x), got shape {volume.shape}")
    if len(sources) != volume.shape[0]:
        raise DerivedSeriesError(
            f"volume has {volume.shape[0]} slices but there are {len(sources)} "
            "source instances"
        )
    if not np.isfinite(volume).all():
        raise DerivedSeriesError("volume has non-finite values")
    for slice_source in sources:
        source = slice_source.header
        frames = int(source.get("NumberOfFrames") or 1)
        if frames > 1 or "PerFrameFunctionalGroupsSequence" in source:
            raise DerivedSeriesError(
                f"source {slice_source.sop_instance_uid} is a multi-frame object "
                f"({frames} frames) given whole: pass its frames "
                "(dicomio.frames.frame_sources)"
            )
        if (int(source.Rows), int(source.Columns)) != volume.shape[1:]:
            raise DerivedSeriesError(
                f"source {slice_source.sop_instance_uid} is {source.Columns} x "
                f"{source.Rows} but the volume slices are {volume.shape[2]} x "
                f"{volume.shape[1]}"
            )
        modality = str(source.get("Modality", "")).upper()
        for keyword in _TYPE1_BY_MODALITY.get(modality, ()):
            if source.get(keyword) in (None, "", []):
                where = f" frame {slice_source.frame}" if slice_source.frame else ""
                raise DerivedSeriesError(
                    f"source {slice_source.sop_instance_uid}{where} has no "
                    f"{keyword}, which a {modality} image requires (Type 1) and "
                    "which cannot be derived"
                )


def build_derived_series(
    sources: Sequence[Dataset | FrameSource],
    volume: np.ndarray,
    *,
    provenance: Provenance,
    kind: str = DENOISED,
    denoised: Sequence[Dataset] = (),
    root: str = UID_ROOT,
) -> list[Dataset]:
    """One derived instance per slice, same geometry, new identity, IOD complete.

    Args:
        sources: per slice, its source header (no pixels needed), or a
            :class:`~.frames.FrameSource` for a frame of a multi-frame source.
        volume: (z, y, x) values in original units (HU for CT).
        provenance: model and output identity written into the headers.
        kind: :data:`DENOISED` or :data:`RESIDUAL`.
        denoised: for a residual, the denoised instances, referenced as sources too.
        root: UID root. Default :data:`UID_ROOT`.

    Returns:
        Datasets with file meta, Explicit VR Little Endian, in slice order.

    Raises:
        DerivedSeriesError: when the volume does not fit the sources, or a source
            lacks a Type 1 attribute that cannot be derived.
        ValueError: on an unknown ``kind``.
    """
    if kind not in _DERIVATION_CODES:
        raise ValueError(f"kind must be {DENOISED!r} or {RESIDUAL!r}, got {kind!r}")
    slices = [s if isinstance(s, FrameSource) else FrameSource.of(s) for s in sources]
    volume = np.asarray(volume, dtype=np.float32)
    _check(slices, volume)
    first = slices[0].header
    modality = str(first.get("Modality", "")).upper()
    stored, slope, intercept = _encode(volume, modality, kind)
    unit = "HU" if modality == "CT" else "original units"
    description, derivation = _describe(provenance, kind, unit)
    series_uid = generate_uid(
        prefix=root,
        entropy_srcs=[
            provenance.output_sha256,
            kind,
            "series",
            first.SeriesInstanceUID,
        ],
    )
    # A source without a frame of reference gets one, the same for both kinds.
    frame_of_reference = str(first.get("FrameOfReferenceUID") or "") or generate_uid(
        prefix=root, entropy_srcs=["frame-of-reference", first.SeriesInstanceUID]
    )
    created_date = provenance.created.strftime("%Y%m%d")
    created_time = provenance.created.strftime("%H%M%S")
    equipment = _contributing_equipment(provenance, root)
    window = _residual_window(volume) if kind == RESIDUAL else None

    out = []
    for k, slice_source in enumerate(slices):
        source = slice_source.header
        ds = copy.deepcopy(source)
        ds.remove_private_tags()
        for keyword in _DROPPED:
            if keyword in ds:
                del ds[keyword]
        instance_entropy = [
            provenance.output_sha256,
            kind,
            slice_source.sop_instance_uid,
        ]
        if slice_source.frame is not None:
            instance_entropy.append(f"frame {slice_source.frame}")
        ds.SOPInstanceUID = generate_uid(prefix=root, entropy_srcs=instance_entropy)
        ds.SeriesInstanceUID = series_uid
        ds.ImageType = _image_type(source, modality, slice_source.frame is not None)
        ds.SeriesNumber = (
            int(source.get("SeriesNumber") or 0) + _SERIES_NUMBER_OFFSET[kind]
        )
        if slice_source.frame is not None or source.get("InstanceNumber") is None:
            ds.InstanceNumber = k + 1
        ds.SeriesDescription = description
        ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = created_date
        ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = created_time
        ds.DerivationDescription = derivation
        ds.DerivationCodeSequence = DicomSequence([_code(_DERIVATION_CODES[kind])])
        references = [_reference(slice_source)]
        if k < len(denoised):
            references.append(_reference(FrameSource.of(denoised[k])))
        ds.SourceImageSequence = DicomSequence(references)
        previous = copy.deepcopy(
            list(source.get("ContributingEquipmentSequence") or [])
        )
        acquisition = _acquisition_equipment(source)
        ds.ContributingEquipmentSequence = DicomSequence(
            [*previous, *acquisition, copy.deepcopy(equipment)]
        )
        _name_this_application(ds, provenance)
        ds.FrameOfReferenceUID = frame_of_reference
        ds.BurnedInAnnotation = "NO"
        _complete_type2(ds, modality)
        _fit_decimal_strings(ds)
        _complete_deidentification(ds)
        if str(ds.get("PresentationLUTShape", "IDENTITY")) != "IDENTITY":
            del ds.PresentationLUTShape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        if modality == "CT" or (slope, intercept) != (1.0, 0.0):
            ds.RescaleSlope = _ds(slope)
            ds.RescaleIntercept = _ds(intercept)
            ds.RescaleType = "HU" if modality == "CT" else "US"
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = "0", _ds(window)
            ds.WindowCenterWidthExplanation = "residual"
            for keyword in ("VOILUTSequence", "VOILUTFunction"):
                if keyword in ds:
                    del ds[keyword]
        ds.PixelData = stored[k].tobytes()
        ds["PixelData"].VR = "OW"
        if provenance.record:
            block = ds.private_block(_PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
            block.add_new(0x10, "UT", provenance.record)
        ds.file_meta = _file_meta(ds)
        out.append(ds)
    return out


def _image_type(source: Dataset, modality: str, from_enhanced: bool) -> list[str]:
    """DERIVED\\SECONDARY, then what the source says of the image, made valid: value 3
    is required (AXIAL or LOCALIZER for CT); an enhanced frame's VOLUME/NONE terms
    mean nothing on a classic image."""
    rest = [str(v) for v in list(source.get("ImageType") or [])[2:]]
    if from_enhanced:
        rest = []
    if modality == "CT" and (not rest or rest[0].upper() not in _CT_IMAGE_TYPE_3):
        rest = ["AXIAL", *rest[1:]]
    if modality == "MR" and not rest:
        rest = [_MR_IMAGE_TYPE_3]
    return ["DERIVED", "SECONDARY", *rest]


def _acquisition_equipment(source: Dataset) -> list[Dataset]:
    """The source's equipment as an Acquisition Equipment item (none if unnamed)."""
    if not str(source.get("Manufacturer") or "").strip():
        return []
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = DicomSequence([_code(_ACQUISITION_EQUIPMENT)])
    for keyword in _SOURCE_EQUIPMENT:
        if source.get(keyword) not in (None, ""):
            item[keyword] = copy.deepcopy(source[keyword])
    return [item]


def _name_this_application(ds: Dataset, provenance: Provenance) -> None:
    """General Equipment names the equipment that made this instance: this app."""
    for keyword in _SOURCE_EQUIPMENT[1:]:
        if keyword in ds and keyword != "InstitutionName":
            del ds[keyword]
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = _lo(provenance.model_name)
    ds.SoftwareVersions = [
        _lo(provenance.model_version),
        _lo(f"{MANUFACTURER} {provenance.software_version}"),
    ]


def _complete_type2(ds: Dataset, modality: str) -> None:
    for keyword in (*_TYPE2, *_TYPE2_BY_MODALITY.get(modality, ())):
        if keyword not in ds:
            setattr(ds, keyword, None)
    # Type 2C of General Series that some vendor sources omit: present, empty.
    for keyword in ("Laterality", "PatientPosition"):
        if keyword not in ds:
            setattr(ds, keyword, "")
    if modality == "MR":
        sequence = _codes(ds.get("ScanningSequence"))
        variant = _codes(ds.get("SequenceVariant"))
        if ("EP" not in sequence or "SK" in variant) and "RepetitionTime" not in ds:
            ds.RepetitionTime = None
        if "IR" in sequence and "InversionTime" not in ds:
            ds.InversionTime = None


def _fit_decimal_strings(ds: Dataset) -> None:
    """Geometry written by some sources (and by pydicom unchecked) as decimal strings
    over the 16 characters DS allows: the same numbers, re-written to fit."""
    for keyword in _GEOMETRY_DS:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        items = [value] if isinstance(value, str | float | int) else list(value)
        if all(len(str(v)) <= 16 for v in items):
            continue
        fitted = [_ds(float(v)) for v in items]
        setattr(ds, keyword, fitted if len(fitted) > 1 else fitted[0])


def _codes(value) -> set[str]:
    """A code string element's values, upper case (one value or several)."""
    if value is None or value == "":
        return set()
    items = [value] if isinstance(value, str) else list(value)
    return {str(v).upper() for v in items}


def _complete_deidentification(ds: Dataset) -> None:
    """Type 1C: a source that says its identity was removed must say how."""
    if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES":
        return
    if ds.get("DeidentificationMethodCodeSequence"):
        return
    if not str(ds.get("DeidentificationMethod") or "").strip():
        ds.DeidentificationMethod = _IDENTITY_REMOVED_UNRECORDED


def _residual_window(volume: np.ndarray) -> float:
    """A window wide enough for the residual's bulk: six robust SDs, at least 20."""
    mad = float(np.median(np.abs(volume - np.median(volume))))
    return max(6.0 * 1.4826 * mad, 20.0)


def _reference(source: FrameSource) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.sop_class_uid
    item.ReferencedSOPInstanceUID = source.sop_instance_uid
    if source.frame is not None:
        item.ReferencedFrameNumber = source.frame
    item.PurposeOfReferenceCodeSequence = DicomSequence([_code(_SOURCE_IMAGE_PURPOSE)])
    return item


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def to_bytes(ds: Dataset) -> bytes:
    """The dataset as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def deidentify_series(
    datasets: Sequence[Dataset], *, root: str = UID_ROOT, salt: str | None = None
) -> str:
    """De-identify datasets in place, one mapping for all (PS3.15 Annex E basic).

    dicognito replaces names, IDs, addresses and shifts dates; every UID is
    replaced by a salted hash under ``root``, the same source UID mapping to the
    same new UID across all ``datasets`` (so two series of one export keep one
    study and frame of reference). The model's Device UID is kept: it names the
    algorithm, not the patient. Private elements, free-text descriptions of the
    source and the attributes in ``_DEID_REMOVE`` are removed; our generated
    Series and Derivation Descriptions stay (Clean Descriptors Option).

    Args:
        datasets: the instances of one export.
        root: UID root of the replacement UIDs. Default :data:`UID_ROOT`.
        salt: secret mixed into the UID hashes; random when ``None`` so the
            mapping cannot be recomputed from known source UIDs.

    Returns:
        A one-line description of the method, for the audit log.
    """
    from dicognito import __version__ as dicognito_version
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer()
    handler = _SaltedUIDs(root, salt or secrets.token_hex(16))
    anonymizer.add_element_handler(handler)  # type: ignore[arg-type]  # duck-typed
    for ds in datasets:
        ds.remove_private_tags()
        for keyword in _DEID_REMOVE:
            if keyword in ds:
                del ds[keyword]
        for keyword in _DEID_EMPTY:
            if keyword in ds:
                setattr(ds, keyword, "")
        anonymizer.anonymize(ds)
        ds.PatientIdentityRemoved = "YES"
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
        ds.DeidentificationMethod = (
            f"PS3.15 E.1 Basic Profile (dicognito {dicognito_version})"
        )
        ds.DeidentificationMethodCodeSequence = DicomSequence(
            [_code(_BASIC_PROFILE), _code(_CLEAN_DESCRIPTORS), _code(_MODIFIED_DATES)]
        )
        item = Dataset()
        item.PurposeOfReferenceCodeSequence = DicomSequence(
            [_code(_DEIDENTIFYING_EQUIPMENT)]
        )
        item.Manufacturer = MANUFACTURER
        item.ManufacturerModelName = "dicognito"
        item.SoftwareVersions = _lo(str(dicognito_version))
        ds.ContributingEquipmentSequence.append(item)
    return (
        f"PS3.15 Annex E Basic Application Confidentiality Profile with Clean "
        f"Descriptors and Modified Dates options (dicognito {dicognito_version}); "
        f"UIDs replaced under {root}"
    )


class _SaltedUIDs:
    """dicognito element handler: UIDs to salted hashes under our root."""

    _KEPT = {"DeviceUID", "TransferSyntaxUID", "ImplementationClassUID"}

    def __init__(self, root: str, salt: str) -> None:
        self.root, self.salt = root, salt

    def __call__(self, dataset: Dataset, element: DataElement) -> bool:
        if element.VR != "UI" or not element.value:
            return False
        keyword = keyword_for_tag(element.tag)
        if keyword in self._KEPT or keyword.endswith("ClassUID"):
            return True
        if isinstance(element.value, str):
            element.value = self._map(element.value)
        else:
            element.value = [self._map(v) for v in element.value]
        return True

    def _map(self, uid: str) -> str:
        return generate_uid(prefix=self.root, entropy_srcs=[self.salt, str(uid)])

    def describe_actions(self):
        yield f"Replace UIDs with salted hashes under {self.root}"

"""Classic single-frame headers made from the frames of an enhanced CT or MR object.

A derived series is written as classic CT or MR Image instances, one per slice,
whatever the source's form: each frame's functional groups (position, orientation,
pixel spacing, rescale, window, timing) become the plain attributes a classic image
carries, as dcm4che's ``emf2sf`` converts them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import UID

from .errors import DicomIOError

__all__ = ["CLASSIC_SOP_CLASSES", "FrameSource", "classic_frames", "frame_sources"]

CT_IMAGE = UID("1.2.840.10008.5.1.4.1.1.2")
MR_IMAGE = UID("1.2.840.10008.5.1.4.1.1.4")
#: Enhanced (and legacy-converted enhanced) SOP classes and their classic class.
CLASSIC_SOP_CLASSES = {
    UID("1.2.840.10008.5.1.4.1.1.2.1"): CT_IMAGE,  # Enhanced CT
    UID("1.2.840.10008.5.1.4.1.1.2.2"): CT_IMAGE,  # Legacy Converted Enhanced CT
    UID("1.2.840.10008.5.1.4.1.1.4.1"): MR_IMAGE,  # Enhanced MR
    UID("1.2.840.10008.5.1.4.1.1.4.4"): MR_IMAGE,  # Legacy Converted Enhanced MR
}

# Functional group macros and the classic attributes they carry, as (macro, keyword
# in the macro item, classic keyword).
_FROM_GROUPS = (
    ("PlanePositionSequence", "ImagePositionPatient", "ImagePositionPatient"),
    ("PlaneOrientationSequence", "ImageOrientationPatient", "ImageOrientationPatient"),
    ("PixelMeasuresSequence", "PixelSpacing", "PixelSpacing"),
    ("PixelMeasuresSequence", "SliceThickness", "SliceThickness"),
    ("PixelMeasuresSequence", "SpacingBetweenSlices", "SpacingBetweenSlices"),
    ("PixelValueTransformationSequence", "RescaleSlope", "RescaleSlope"),
    ("PixelValueTransformationSequence", "RescaleIntercept", "RescaleIntercept"),
    ("PixelValueTransformationSequence", "RescaleType", "RescaleType"),
    ("FrameVOILUTSequence", "WindowCenter", "WindowCenter"),
    ("FrameVOILUTSequence", "WindowWidth", "WindowWidth"),
    (
        "FrameVOILUTSequence",
        "WindowCenterWidthExplanation",
        "WindowCenterWidthExplanation",
    ),
    ("CTXRayDetailsSequence", "KVP", "KVP"),
    ("MRTimingAndRelatedParametersSequence", "RepetitionTime", "RepetitionTime"),
    ("MRTimingAndRelatedParametersSequence", "EchoTrainLength", "EchoTrainLength"),
    ("MRTimingAndRelatedParametersSequence", "FlipAngle", "FlipAngle"),
    ("MREchoSequence", "EffectiveEchoTime", "EchoTime"),
)

# Attributes of the enhanced form that a classic image does not have.
_ENHANCED_ONLY = (
    "PerFrameFunctionalGroupsSequence",
    "SharedFunctionalGroupsSequence",
    "NumberOfFrames",
    "FrameIncrementPointer",
    "DimensionOrganizationSequence",
    "DimensionIndexSequence",
    "DimensionOrganizationType",
    "ContentQualification",
    "VolumetricProperties",
    "VolumeBasedCalculationTechnique",
    "PixelPresentation",
    "ComplexImageComponent",
    "AcquisitionContrast",
    "SourceImageEvidenceSequence",
    "ReferencedImageEvidenceSequence",
    "AcquisitionContextSequence",
    "ConcatenationUID",
    "InConcatenationNumber",
    "InConcatenationTotalNumber",
    "ConcatenationFrameOffsetNumber",
    "RepresentativeFrameNumber",
    "EchoPulseSequence",
    "InversionRecovery",
    "EchoPlanarPulseSequence",
    "SteadyStatePulseSequence",
    "SpectrallySelectedSuppression",
    "OversamplingPhase",
    "GeometryOfKSpaceTraversal",
    "SegmentedKSpaceTraversal",
    "RectilinearPhaseEncodeReordering",
    "TimeOfFlightContrast",
    "ArterialSpinLabelingContrast",
    "MultipleSpinEcho",
    "MultiPlanarExcitation",
    "PhaseContrast",
    "SaturationRecovery",
    "Spoiling",
    "PartialFourier",
    "ResonantNucleus",
    "KSpaceFiltering",
    "MagnetizationTransfer",
    "BloodSignalNulling",
    "Tagging",
    "DiffusionPulseSequence",
)


class ClassicConversionError(DicomIOError):
    """An enhanced frame cannot become a classic image.

    Cause: a Type 1 attribute of the classic CT or MR Image has no source in the
    enhanced object (for MR, Scanning Sequence comes from Echo Pulse Sequence).
    Fix: the message names it; such a source cannot be exported.
    """


@dataclass(frozen=True)
class FrameSource:
    """Where one slice of a derived series comes from.

    ``frame`` is the 1-based frame number within a multi-frame source, ``None`` for
    a classic single-frame one; ``header`` is a classic header either way.
    """

    header: Dataset
    sop_class_uid: str
    sop_instance_uid: str
    frame: int | None = None

    @classmethod
    def of(cls, ds: Dataset) -> FrameSource:
        """A single-frame instance as its own source (SOP class from the dataset,
        else its file meta)."""
        sop_class = ds.get("SOPClassUID") or ds.get("file_meta", Dataset()).get(
            "MediaStorageSOPClassUID", ""
        )
        return cls(ds, str(sop_class), str(ds.get("SOPInstanceUID", "")))


def _item(container: Dataset | None, macro: str) -> Dataset | None:
    if container is None:
        return None
    seq = container.get(macro)
    return seq[0] if seq else None


def _scanning_sequence(ds: Dataset) -> list[str]:
    """PS3.3 C.8.13.1 attributes back to the classic Scanning Sequence codes."""
    pulse = str(ds.get("EchoPulseSequence", "")).upper()
    codes = {"SPIN": ["SE"], "GRADIENT": ["GR"], "BOTH": ["SE", "GR"]}.get(pulse)
    if codes is None:
        raise ClassicConversionError(
            "enhanced MR has no Echo Pulse Sequence (0018,9008): the classic Scanning "
            "Sequence (Type 1) cannot be derived"
        )
    if str(ds.get("InversionRecovery", "")).upper() == "YES":
        codes.append("IR")
    if str(ds.get("EchoPlanarPulseSequence", "")).upper() == "YES":
        codes.append("EP")
    return codes


def _sequence_variant(ds: Dataset) -> list[str]:
    variant = []
    if str(ds.get("SteadyStatePulseSequence", "NONE")).upper() not in ("", "NONE"):
        variant.append("SS")
    if str(ds.get("Spoiling", "NONE")).upper() not in ("", "NONE"):
        variant.append("SP")
    if str(ds.get("MagnetizationTransfer", "NONE")).upper() not in ("", "NONE"):
        variant.append("MTC")
    return variant or ["NONE"]


def classic_frames(ds: Dataset) -> list[Dataset]:
    """One classic header per frame of an enhanced CT or MR header (no pixels needed).

    Per-frame functional groups win over shared ones, which win over the top level.

    Raises:
        ClassicConversionError: the SOP class is not an enhanced CT or MR one, or
            an enhanced MR lacks what the classic Scanning Sequence is made from.
    """
    sop_class = UID(str(ds.get("SOPClassUID", "")))
    classic_class = CLASSIC_SOP_CLASSES.get(sop_class)
    if classic_class is None:
        raise ClassicConversionError(
            f"{sop_class.name or sop_class or 'an object without SOP Class UID'} "
            "is not an enhanced CT or MR image; only those convert to classic images"
        )
    mr_codes = None
    if classic_class == MR_IMAGE:
        mr_codes = (_scanning_sequence(ds), _sequence_variant(ds))
    n_frames = int(ds.get("NumberOfFrames") or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    base = copy.deepcopy(ds)
    for keyword in _ENHANCED_ONLY:
        if keyword in base:
            del base[keyword]
    base.SOPClassUID = classic_class
    if mr_codes is not None:
        base.ScanningSequence, base.SequenceVariant = mr_codes
    out = []
    for index in range(n_frames):
        header = copy.deepcopy(base)
        frame_item = per_frame[index] if index < len(per_frame) else None
        for macro, keyword, classic in _FROM_GROUPS:
            for container in (frame_item, shared):
                item = _item(container, macro)
                if item is not None and item.get(keyword) not in (None, ""):
                    setattr(header, classic, copy.deepcopy(item[keyword].value))
                    break
        header.InstanceNumber = index + 1
        out.append(header)
    return out


def frame_sources(ds: Dataset) -> list[FrameSource]:
    """The slices ``ds`` holds, as classic headers with where each came from."""
    whole = FrameSource.of(ds)
    if UID(whole.sop_class_uid) not in CLASSIC_SOP_CLASSES:
        return [whole]
    return [
        FrameSource(header, whole.sop_class_uid, whole.sop_instance_uid, frame=number)
        for number, header in enumerate(classic_frames(ds), start=1)
    ]

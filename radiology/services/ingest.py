"""Ingest service: uploaded files, folders and zips become originals and volumes."""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction

from dicomio import (
    DicomRejected,
    Limits,
    assemble_series,
    iter_members,
    read_instance,
)
from dicomio import Instance as DecodedInstance
from dicomio.errors import DicomIOError
from dicomio.volume import DUPLICATE_PREFIX, duplicate_reason, same_image

from ..audit import audit_record
from ..models import AuditEvent, Instance, Series, Study, Upload
from ..storage import BatchWriter, generated_name, media_path, npy_chunks

logger = logging.getLogger(__name__)

#: Most threads decoding uploaded files at once.
_DECODE_THREADS = 8


@dataclass
class IngestReport:
    upload: Upload
    series: list[Series] = field(default_factory=list)
    rejections: list[dict[str, str]] = field(default_factory=list)
    #: seconds per stage: ``read`` (files read and decoded), ``assemble``,
    #: ``write`` (volumes written and fsynced, rows added), ``sync`` (queued
    #: originals awaited and every file renamed into place), ``commit`` and
    #: ``total``
    timings_s: dict[str, float] = field(default_factory=dict)


def ingest_limits() -> Limits:
    return Limits(
        max_entries=settings.ZIP_MAX_ENTRIES,
        max_uncompressed_bytes=settings.ZIP_MAX_UNCOMPRESSED_BYTES,
        max_ratio=settings.ZIP_MAX_RATIO,
        max_file_bytes=settings.UPLOAD_MAX_BYTES,
        max_pixels=settings.DICOM_MAX_PIXELS,
    )


def _read_sources(sources, limits, rejections):
    """Yield ``(instance, raw bytes)`` for every usable file, in upload order; record
    the others. Files are read one after another (archives are streamed), and
    decoded on a few threads: hashing, pixel conversion and file reads release the
    GIL, so a many-core host decodes a series several files at a time."""
    workers = min(_DECODE_THREADS, len(os.sched_getaffinity(0)))
    pending: deque = deque()

    def settle(keep: int):
        """Yield the decoded files, oldest first, until ``keep`` remain pending."""
        while len(pending) > keep:
            data, future = pending.popleft()
            try:
                yield future.result(), data
            except DicomRejected as exc:
                rejections.append({"name": exc.name, "reason": exc.reason})

    with ThreadPoolExecutor(workers, thread_name_prefix="ingest-decode") as pool:
        for path, display_name in sources:
            for member in iter_members(Path(path), display_name, limits):
                if member.error:
                    # Settle earlier files first: rejections stay in upload order.
                    yield from settle(0)
                    rejections.append({"name": member.name, "reason": member.error})
                    continue
                try:
                    data = member.read()
                except DicomRejected as exc:
                    future = Future()
                    future.set_exception(exc)
                    pending.append((b"", future))
                else:
                    future = pool.submit(
                        read_instance, data, member.name, limits=limits
                    )
                    pending.append((data, future))
                yield from settle(2 * workers)
        yield from settle(0)


def _one_patient_per_study(read, rejections):
    """Several patients in one upload become one study each (each study has its
    own patient and access); but one study is one patient: files of a study that
    name another PatientID than most of its files are refused."""
    by_study: dict[str, Counter] = {}
    for inst, _ in read:
        by_study.setdefault(inst.study_instance_uid, Counter())[inst.patient_id] += 1
    kept = []
    for inst, data in read:
        majority, _ = by_study[inst.study_instance_uid].most_common(1)[0]
        if inst.patient_id == majority:
            kept.append((inst, data))
        else:
            rejections.append(
                {
                    "name": inst.name,
                    "reason": f"PatientID {inst.patient_id!r} in study "
                    f"{inst.study_instance_uid}, whose other files name "
                    f"{majority!r}: one study is one patient",
                }
            )
    return kept


#: Where a report names another file: "duplicate of NAME: ...", "... (first seen in
#: NAME)", "... duplicates NAME (SOPInstanceUID ...)".
_NAMED_FILE = (
    re.compile(rf"^(?P<pre>{re.escape(DUPLICATE_PREFIX)})(?P<name>.+?)(?P<post>: )"),
    re.compile(r"(?P<pre>\(first seen in )(?P<name>.+)(?P<post>\))$"),
    re.compile(r"(?P<pre> duplicates )(?P<name>.+?)(?P<post> \(SOPInstanceUID )"),
)
_ITSELF_REJECTED = "another file of this upload (itself rejected, see there)"


def _unname_rejected(rejections: list[dict]) -> None:
    """A report never points at a file that was itself rejected (a duplicate of a
    file later refused would send the reader to a file that is not stored). Only
    the places where reports name another file are looked at (one pass), and a
    "duplicate, kept once" whose first file was refused becomes a rejection: none
    of its copies is stored."""
    refused = {r["name"] for r in rejections if not r.get("duplicate")}
    for entry in rejections:
        for pattern in _NAMED_FILE:
            match = pattern.search(entry["reason"])
            if not match or match["name"] not in refused - {entry["name"]}:
                continue
            if entry.pop("duplicate", False):
                entry["reason"] = (
                    f"the same image as {_ITSELF_REJECTED}; not stored either"
                )
            else:
                entry["reason"] = (
                    entry["reason"][: match.start("name")]
                    + _ITSELF_REJECTED
                    + entry["reason"][match.end("name") :]
                )
            break


def _rejection(name: str, reason: str) -> dict:
    """A per-file report; ``duplicate`` marks the same image again (not an error)."""
    entry: dict = {"name": name, "reason": reason}
    if reason.startswith(DUPLICATE_PREFIX):
        entry["duplicate"] = True
    return entry


def default_group(user) -> Group | None:
    return user.groups.order_by("name").first()


def upload_ingest(
    *,
    sources: list[tuple[Path, str]],
    owner,
    group: Group | None = None,
) -> IngestReport:
    """Validate, store and assemble everything in ``sources``.

    Args:
        sources: ``(path on disk, name to show)`` pairs: files, folders or zip archives.
        owner: the user the new studies belong to.
        group: the group the studies are shared with; default the owner's first group.

    Returns:
        The upload with its series (new or updated) and the per-file rejections.
        Files already stored are never touched: a re-upload of the same instances is
        a no-op, and new instances of a stored series rebuild its volume.
    """
    started = time.perf_counter()
    limits = ingest_limits()
    rejections: list[dict[str, str]] = []
    with BatchWriter() as batch:
        originals = _StagedOriginals(batch, owner)
        read = []
        for inst, data in _read_sources(sources, limits, rejections):
            originals.stage(inst, data)
            read.append((inst, data))
        t_read = time.perf_counter()
        read = _one_patient_per_study(read, rejections)
        raw_by_sop: dict[str, tuple] = {}
        for inst, data in read:
            # The first file of a SOPInstanceUID is kept; assemble_series drops
            # identical copies and rejects later files whose content differs.
            raw_by_sop.setdefault(inst.sop_instance_uid, (inst, data))
        group = group if group is not None else default_group(owner)
        file_count = len(read) + len(rejections)

        assembly = assemble_series([inst for inst, _ in read])
        rejections.extend(_rejection(n, r) for n, r in assembly.rejections)
        t_assemble = time.perf_counter()

        with transaction.atomic():
            upload = Upload.objects.create(owner=owner, file_count=file_count)
            stored_series = []
            for volume in assembly.series:
                series = _store_series(
                    volume, raw_by_sop, owner, group, limits, rejections, originals
                )
                if series is not None:
                    stored_series.append(series)
            t_write = time.perf_counter()
            # Files become durable and visible (renamed) before the rows naming
            # them commit; staged files no row names are removed.
            originals.drop_unused()
            batch.finish()
            t_sync = time.perf_counter()
            _unname_rejected(rejections)
            try:
                _record_upload(upload, stored_series, rejections, owner)
            except BaseException:
                batch.withdraw()  # the transaction rolls back: no row names them
                raise
    finished = time.perf_counter()
    timings = {
        "read": t_read - started,
        "assemble": t_assemble - t_read,
        "write": t_write - t_assemble,
        "sync": t_sync - t_write,
        "commit": finished - t_sync,
        "total": finished - started,
    }
    logger.info(
        "ingest: %d files, %d series, %d rejected in %.2f s (%s)",
        file_count,
        len(stored_series),
        len(rejections),
        timings["total"],
        ", ".join(f"{k} {v:.2f} s" for k, v in timings.items() if k != "total"),
    )
    return IngestReport(
        upload=upload,
        series=stored_series,
        rejections=rejections,
        timings_s={k: round(v, 4) for k, v in timings.items()},
    )


def _record_upload(upload: Upload, stored_series, rejections, owner) -> None:
    # Files, not reports: one file may be reported twice, and a merge with a stored
    # series may report stored files too; never below zero.
    refused = {r["name"] for r in rejections}
    upload.accepted_count = max(0, upload.file_count - len(refused))
    upload.rejections = rejections
    upload.save()
    upload.series.set(stored_series)
    audit_record(
        action=AuditEvent.Action.UPLOAD,
        actor=owner,
        target=upload,
        extra_data={
            "files": upload.file_count,
            "series": [s.pk for s in stored_series],
            "rejected": len(rejections),
        },
    )
    for rejection in rejections:
        audit_record(
            action=AuditEvent.Action.REJECTION,
            actor=owner,
            target=upload,
            extra_data=rejection,
        )


class _StagedOriginals:
    """Uploaded files written while later ones are still being decoded.

    The first file of each SOPInstanceUID goes to the batch as soon as it is
    decoded, under the name it will have if it is stored: the disk and the flushes
    then overlap the decoding (which holds the GIL) instead of following it.
    Instances the owner already has stored in a series of that SeriesInstanceUID
    are not staged (a re-upload writes nothing); a staged file no row ends up
    naming (a duplicate, a rejected file) is discarded before the batch finishes.
    """

    def __init__(self, batch: BatchWriter, owner) -> None:
        self.batch = batch
        self._owner = owner
        self._staged: dict[str, tuple[DecodedInstance, str]] = {}
        self._used: set[str] = set()
        self._stored: dict[str, set[str]] = {}

    def _already_stored(self, inst: DecodedInstance) -> bool:
        series_uid = inst.series_instance_uid
        if series_uid not in self._stored:
            self._stored[series_uid] = set(
                Instance.objects.filter(
                    series__series_instance_uid=series_uid,
                    series__study__owner=self._owner,
                ).values_list("sop_instance_uid", flat=True)
            )
        return inst.sop_instance_uid in self._stored[series_uid]

    def stage(self, inst: DecodedInstance, data: bytes) -> None:
        if inst.sop_instance_uid in self._staged or self._already_stored(inst):
            return
        name = generated_name("originals", ".dcm")
        self.batch.write(name, data, sha256=inst.sha256)
        self._staged[inst.sop_instance_uid] = (inst, name)

    def name_for(self, inst: DecodedInstance, data: bytes) -> str:
        """The stored name of ``inst``'s file: its staged one, else written now."""
        staged = self._staged.get(inst.sop_instance_uid)
        if staged is not None and staged[0] is inst:
            name = staged[1]
        else:
            name = generated_name("originals", ".dcm")
            self.batch.write(name, data, sha256=inst.sha256)
        self._used.add(name)
        return name

    def drop_unused(self) -> None:
        for _, name in self._staged.values():
            if name not in self._used:
                self.batch.discard(name)


def _store_series(
    volume, raw_by_sop, owner, group, limits, rejections, originals: _StagedOriginals
) -> Series | None:
    first = raw_by_sop[volume.slices[0].sop_instance_uid][0]
    study, _ = Study.objects.get_or_create(
        owner=owner,
        study_instance_uid=volume.study_instance_uid,
        defaults={
            "group": group,
            "patient_id": volume.patient_id,
            "patient_name": first.patient_name[:324],
            "description": first.study_description[:256],
            "study_date": volume.study_date,
        },
    )
    # Serialise ingest into one study: two uploads adding slices to the same series
    # must not each rebuild it from the old instance set (PostgreSQL READ COMMITTED).
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.patient_id != volume.patient_id:
        rejections.extend(
            {
                "name": raw_by_sop[sop][0].name,
                "reason": f"study {study.study_instance_uid} is stored for PatientID "
                f"{study.patient_id!r}; this file names {volume.patient_id!r}: one "
                "study is one patient",
            }
            for sop in sorted({ref.sop_instance_uid for ref in volume.slices})
        )
        return None
    existing = Series.objects.filter(
        study=study, series_instance_uid=volume.series_instance_uid
    ).first()
    sop_uids = {ref.sop_instance_uid for ref in volume.slices}
    if existing is not None:
        stored = {
            row[0]: row[1:]
            for row in existing.instances.values_list(
                "sop_instance_uid", "sha256", "file", "original_name"
            )
        }
        for sop in sorted(sop_uids & stored.keys()):
            inst = raw_by_sop[sop][0]
            sha256, file, original_name = stored[sop]
            if inst.sha256 != sha256:
                reason = _against_stored(inst, file, original_name, limits)
                rejections.append(_rejection(inst.name, reason))
        if sop_uids <= stored.keys():
            return existing  # the same instances again: nothing to do
        volume = _merge_with_stored(existing, volume, raw_by_sop, limits, rejections)
        if volume is None:
            return existing

    volume_name = generated_name("volumes", ".npy")
    # Slice by slice from the decoded instances: the series is never stacked in
    # memory, so ingest needs no more than the decoded files themselves.
    dtype = volume.storage_dtype()
    volume_sha256 = originals.batch.write_chunks(
        volume_name, npy_chunks(volume.shape, dtype, volume.iter_stored(dtype))
    )
    fields = {
        "modality": volume.modality,
        "description": volume.description[:256],
        "shape": list(volume.shape),
        "spacing_mm": [float(v) for v in volume.spacing_mm],
        "origin_mm": [float(v) for v in volume.origin or ()],
        "orientation": [float(v) for v in volume.orientation or ()],
        "instance_count": len(sop_uids),
        "volume_file": volume_name,
        "volume_sha256": volume_sha256,
        "warnings": list(volume.warnings),
        "derived": volume.derived,
        "scanner_derived": volume.scanner_derived,
        "windows": [
            {"center": c, "width": w, "explanation": text[:64]}
            for c, w, text in first.windows
        ],
    }
    if existing is None:
        series = Series.objects.create(
            study=study, series_instance_uid=volume.series_instance_uid, **fields
        )
        action = AuditEvent.Action.INGEST
    else:
        series = existing
        for key, value in fields.items():
            setattr(series, key, value)
        series.save()
        action = AuditEvent.Action.SERIES_UPDATED

    first_slice: dict[str, int] = {}
    frames: Counter[str] = Counter()
    frame_slices: dict[str, dict[int, int]] = {}
    for index, ref in enumerate(volume.slices):
        first_slice.setdefault(ref.sop_instance_uid, index)
        frames[ref.sop_instance_uid] += 1
        frame_slices.setdefault(ref.sop_instance_uid, {})[ref.frame_index] = index

    def slices_of(sop: str) -> list[int] | None:
        if frames[sop] < 2:
            return None
        by_frame = frame_slices[sop]
        return [by_frame.get(f) for f in range(max(by_frame) + 1)]

    known = dict(series.instances.values_list("sop_instance_uid", "pk"))
    new_instances = []
    for sop, index in first_slice.items():
        if sop in known:
            Instance.objects.filter(pk=known[sop]).update(
                slice_index=index,
                frame_count=frames[sop],
                frame_slices=slices_of(sop),
            )
            continue
        inst, data = raw_by_sop[sop]
        name = originals.name_for(inst, data)
        new_instances.append(
            Instance(
                series=series,
                sop_instance_uid=sop,
                sop_class_uid=inst.sop_class_uid,
                original_name=inst.name[:255],
                file=name,
                sha256=inst.sha256,
                size_bytes=len(data),
                slice_index=index,
                frame_count=frames[sop],
                frame_slices=slices_of(sop),
            )
        )
    Instance.objects.bulk_create(new_instances, batch_size=500)
    audit_record(
        action=action,
        actor=owner,
        target=series,
        study=study,
        extra_data={
            "series_instance_uid": series.series_instance_uid,
            "modality": series.modality,
            "shape": series.shape,
            "spacing_mm": series.spacing_mm,
            "instances": series.instance_count,
            "volume_sha256": series.volume_sha256,
            "warnings": series.warnings,
        },
    )
    return series


def _against_stored(inst, file: str, original_name: str, limits) -> str:
    """Why a file whose SOP Instance UID is stored with other bytes is reported: a
    duplicate when it decodes to the same image (a lossless transcode), else a
    conflict; the stored file is kept either way."""
    try:
        stored = read_instance(
            media_path(file).read_bytes(), original_name, limits=limits
        )
    except (OSError, DicomIOError):
        stored = None
    if stored is not None and same_image(stored, inst):
        return duplicate_reason(inst, stored, f"stored {original_name}")
    return (
        f"SOPInstanceUID {inst.sop_instance_uid} is already stored with "
        "different content; the stored file is kept"
    )


def _merge_with_stored(existing: Series, volume, raw_by_sop, limits, rejections):
    """Rebuild a stored series' volume from its stored originals plus the new files."""
    combined = []
    for stored in existing.instances.all():
        data = media_path(stored.file).read_bytes()
        inst = read_instance(data, stored.original_name, limits=limits)
        combined.append(inst)
        raw_by_sop.setdefault(inst.sop_instance_uid, (inst, data))
    stored_uids = {inst.sop_instance_uid for inst in combined}
    combined.extend(
        raw_by_sop[ref.sop_instance_uid][0]
        for ref in volume.slices
        if ref.sop_instance_uid not in stored_uids and ref.frame_index == 0
    )
    assembly = assemble_series(combined)
    rejections.extend(_rejection(n, r) for n, r in assembly.rejections)
    if len(assembly.series) != 1:
        logger.warning("merge of series %s did not form one volume", existing.pk)
        return None
    return assembly.series[0]

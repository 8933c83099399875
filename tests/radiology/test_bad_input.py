"""Hostile uploads after a good series is stored: refused by name, nothing lost."""

from __future__ import annotations

import io
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from celery.app.task import Task
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import RequestFactory
from pydicom.data import get_testdata_file

from dicomio.synthetic import phantom_volume, write_series
from radiology.models import AuditEvent, DenoiseJob, Instance, Series
from radiology.services.fixity import fixity_check
from radiology.services.ingest import upload_ingest
from radiology.storage import load_array, media_path

pytestmark = pytest.mark.django_db

MPEG2 = "1.2.840.10008.1.2.4.100"


@pytest.fixture
def queued(monkeypatch):
    """Every task message the code under test tries to send."""
    sent: list[str] = []

    def record(self, *args, **kwargs):
        sent.append(self.name)

    monkeypatch.setattr(Task, "apply_async", record)
    return sent


@pytest.fixture
def stored(alice, tmp_path):
    """A good series already in storage, with its volume as stored."""
    folder = tmp_path / "good"
    write_series(
        folder,
        phantom_volume((4, 32, 32), seed=1),
        spacing_mm=(2, 1, 1),
        patient_id="P1",
    )
    (series,) = upload_ingest(sources=[(folder, "good")], owner=alice).series
    return series, np.array(load_array(series.volume_file))


@pytest.fixture(autouse=True)
def _private_temp(settings, tmp_path, monkeypatch):
    """Upload temp files go to a folder of this test's own, so leftovers can be seen."""
    scratch = tmp_path / "upload-tmp"
    scratch.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(scratch)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def _leftovers(scratch: Path) -> list[Path]:
    """Upload temp files left behind; multiprocessing's own runtime folder (the
    decoding sandbox's forkserver socket, ``pymp-*``) is not upload data."""
    return [p for p in scratch.iterdir() if not p.name.startswith("pymp-")]


def _slices(tmp_path: Path, name: str, count: int = 2, **kwargs) -> list[bytes]:
    kwargs.setdefault("patient_id", "P1")
    paths = write_series(
        tmp_path / name,
        phantom_volume((count, 16, 16), seed=zlib.crc32(name.encode()) % 1000),
        spacing_mm=(2, 1, 1),
        **kwargs,
    )
    return [p.read_bytes() for p in sorted(paths)]


def _testdata(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def _dataset_start(data: bytes) -> int:
    """Offset of the first element after the File Meta Information group."""
    (meta_length,) = struct.unpack("<I", data[140:144])
    return 144 + meta_length


def _nested_sequence(depth: int) -> bytes:
    """Explicit VR little endian (0008,1140) sequences, each item holding the next."""
    open_sq = b"\x08\x00\x40\x11SQ\x00\x00\xff\xff\xff\xff"
    open_item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    close_item = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
    close_sq = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return (open_sq + open_item) * depth + (close_item + close_sq) * depth


def _with_meta(data: bytes, **meta: str) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in meta.items():
        setattr(ds.file_meta, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _scrambled_fragments(name: str) -> bytes:
    """A compressed file whose codestream is replaced by noise of equal length."""
    ds = pydicom.dcmread(get_testdata_file(name))
    frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    noise = np.random.default_rng(7).bytes(len(frames[0]))
    ds.PixelData = pydicom.encaps.encapsulate([noise])
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _hostile_files(tmp_path: Path) -> dict[str, tuple[str, bytes, str]]:
    """case -> (uploaded name, bytes, a phrase the rejection reason must contain)."""
    good = _slices(tmp_path, "source", count=1, patient_id="P9")[0]
    start = _dataset_start(good)
    pixel_tag = good.find(b"\xe0\x7f\x10\x00OW\x00\x00")
    gigabytes = bytearray(good)
    gigabytes[pixel_tag + 8 : pixel_tag + 12] = (0x7FFFFFF0).to_bytes(4, "little")
    short_pixels = bytearray(good)
    declared = int.from_bytes(good[pixel_tag + 8 : pixel_tag + 12], "little")
    short_pixels[pixel_tag + 8 : pixel_tag + 12] = (declared - 64).to_bytes(4, "little")
    del short_pixels[-64:]
    return {
        "non-dicom": (
            "notes.txt",
            b"Patient notes, not an image\n" * 20,
            "not a DICOM",
        ),
        "zero-bytes": ("empty.dcm", b"", "empty file"),
        "no-preamble": ("raw.dcm", good[128:], "not a DICOM"),
        "no-preamble-no-meta": ("bare.dcm", good[start:], "not a DICOM"),
        "nested-500-deep": (
            "deep.dcm",
            good[:start] + _nested_sequence(500) + good[start:],
            "unreadable",
        ),
        "element-declares-2-GiB": (
            "huge.dcm",
            bytes(gigabytes),
            "truncated or corrupt",
        ),
        "pixel-data-too-short": ("short.dcm", bytes(short_pixels), "pixel data is"),
        "unsupported-compression": (
            "mpeg2.dcm",
            _with_meta(_testdata("MR_small_jp2klossless.dcm"), TransferSyntaxUID=MPEG2),
            "cannot decode",
        ),
        "corrupt-jpeg2000": (
            "j2k.dcm",
            _scrambled_fragments("MR_small_jp2klossless.dcm"),
            "pixel data",
        ),
        "corrupt-jpeg-ls": (
            "jls.dcm",
            _scrambled_fragments("MR_small_jpeg_ls_lossless.dcm"),
            "pixel data",
        ),
        "corrupt-rle": (
            "rle.dcm",
            _scrambled_fragments("MR_small_RLE.dcm"),
            "pixel data",
        ),
        "gzip-not-dicom": ("scan.dcm.gz", _testdata("zipMR.gz"), "gzip archive"),
        "colour": ("rgb.dcm", _testdata("SC_rgb.dcm"), "colour image"),
        "structured-report": ("sr.dcm", _testdata("test-SR.dcm"), "not an image"),
    }


HOSTILE_CASES = [
    "non-dicom",
    "zero-bytes",
    "no-preamble",
    "no-preamble-no-meta",
    "nested-500-deep",
    "element-declares-2-GiB",
    "pixel-data-too-short",
    "unsupported-compression",
    "corrupt-jpeg2000",
    "corrupt-jpeg-ls",
    "corrupt-rle",
    "gzip-not-dicom",
    "colour",
    "structured-report",
]


def _upload(client, user, files: dict[str, bytes]):
    handles = []
    for name, data in files.items():
        handle = io.BytesIO(data)
        handle.name = name
        handles.append(handle)
    client.force_login(user)
    response = client.post("/api/uploads", {"files": handles})
    assert response.status_code == 201, response.content[:500]
    return response.json()


def _assert_nothing_lost(stored, queued) -> None:
    series, volume = stored
    series.refresh_from_db()
    report = fixity_check(series=series)
    assert report.ok, [(i.role, i.file) for i in report.issues]
    np.testing.assert_array_equal(load_array(series.volume_file), volume)
    assert series.instances.count() == 4
    assert DenoiseJob.objects.count() == 0
    assert queued == []


def _assert_audited(name: str, reason: str) -> None:
    events = AuditEvent.objects.filter(action=AuditEvent.Action.REJECTION)
    assert any(
        name in e.extra_data["name"] and e.extra_data["reason"] == reason
        for e in events
    ), [e.extra_data for e in events]


@pytest.mark.parametrize("case", HOSTILE_CASES)
def test_hostile_file_is_refused_by_name_and_nothing_stored_is_lost(
    case, client, alice, stored, queued, tmp_path, _private_temp
):
    name, data, phrase = _hostile_files(tmp_path)[case]
    body = _upload(client, alice, {name: data})
    assert body["series"] == []
    (rejection,) = body["rejected"]
    assert rejection["name"] == name
    assert phrase in rejection["reason"], rejection["reason"]
    _assert_audited(name, rejection["reason"])
    _assert_nothing_lost(stored, queued)
    assert _leftovers(_private_temp) == []


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.25, 0.5, 0.75, 0.97, 0.999])
def test_file_truncated_anywhere_is_refused(
    fraction, client, alice, stored, queued, tmp_path
):
    good = _slices(tmp_path, "cut", count=1)[0]
    cut = max(1, int(len(good) * fraction))
    body = _upload(client, alice, {"cut.dcm": good[:cut]})
    assert body["series"] == []
    (rejection,) = body["rejected"]
    assert rejection["name"] == "cut.dcm" and rejection["reason"]
    _assert_audited("cut.dcm", rejection["reason"])
    _assert_nothing_lost(stored, queued)


def test_another_patient_inside_a_study_is_named_and_refused(
    client, alice, stored, queued, tmp_path
):
    majority = _slices(tmp_path, "p2", count=3, patient_id="P2", study_uid="1.2.3.4.5")
    intruder = _slices(tmp_path, "p3", count=1, patient_id="P3", study_uid="1.2.3.4.5")[
        0
    ]
    files = {f"p2-{i}.dcm": data for i, data in enumerate(majority)}
    files["intruder.dcm"] = intruder
    body = _upload(client, alice, files)
    assert len(body["series"]) == 1 and body["series"][0]["instances"] == 3
    (rejection,) = body["rejected"]
    assert rejection["name"] == "intruder.dcm"
    assert "one study is one patient" in rejection["reason"]
    _assert_audited("intruder.dcm", rejection["reason"])
    _assert_nothing_lost(stored, queued)


def test_files_of_another_study_in_one_series_are_refused_by_name(
    client, alice, stored, queued, tmp_path
):
    study_a = _slices(
        tmp_path, "s1", count=3, series_uid="1.2.3.4.5", study_uid="1.2.3.1"
    )
    study_b = _slices(
        tmp_path,
        "s2",
        count=1,
        series_uid="1.2.3.4.5",
        study_uid="1.2.3.2",
        origin=(0.0, 0.0, 10.0),
    )
    files = {f"a-{i}.dcm": data for i, data in enumerate(study_a)}
    files["other-study.dcm"] = study_b[0]
    body = _upload(client, alice, files)
    (rejection,) = body["rejected"]
    assert rejection["name"] == "other-study.dcm"
    assert "StudyInstanceUID" in rejection["reason"]
    assert body["series"][0]["instances"] == 3
    _assert_audited("other-study.dcm", rejection["reason"])
    _assert_nothing_lost(stored, queued)


def test_duplicate_sop_instance_uid_with_other_content_is_refused(
    client, alice, stored, queued, tmp_path
):
    original = _slices(tmp_path, "dup", count=2)
    ds = pydicom.dcmread(io.BytesIO(original[1]))
    arr = ds.pixel_array.copy()
    arr[0, 0] += 1
    ds.PixelData = arr.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    body = _upload(
        client,
        alice,
        {"a.dcm": original[0], "b.dcm": original[1], "b-edited.dcm": out.getvalue()},
    )
    (rejection,) = body["rejected"]
    assert rejection["name"] == "b-edited.dcm"
    assert "duplicate SOPInstanceUID" in rejection["reason"]
    assert body["series"][0]["instances"] == 2
    _assert_audited("b-edited.dcm", rejection["reason"])
    _assert_nothing_lost(stored, queued)


def _upload_other_content_for_a_stored_instance(client, alice, stored) -> dict:
    series, _ = stored
    first = series.instances.order_by("slice_index").first()
    ds = pydicom.dcmread(media_path(first.file))
    ds.PatientName = "Changed^Content"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    body = _upload(client, alice, {"replacement.dcm": out.getvalue()})
    assert Instance.objects.filter(sop_instance_uid=first.sop_instance_uid).count() == 1
    return body


def test_stored_instance_is_never_replaced_by_other_content(
    client, alice, stored, queued
):
    body = _upload_other_content_for_a_stored_instance(client, alice, stored)
    assert body["series"] == [] or body["series"][0]["id"] == stored[0].pk
    _assert_nothing_lost(stored, queued)


def test_other_content_under_a_stored_sop_instance_uid_is_named(
    client, alice, stored, queued
):
    body = _upload_other_content_for_a_stored_instance(client, alice, stored)
    (rejection,) = body["rejected"]
    assert rejection["name"] == "replacement.dcm"
    assert "SOPInstanceUID" in rejection["reason"]
    _assert_audited("replacement.dcm", rejection["reason"])


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "/abs/olute.dcm", "nul\x00byte.dcm", "x" * 5000 + ".dcm"],
    ids=["climbing", "absolute", "nul", "very-long"],
)
def test_hostile_file_names_never_reach_the_file_system(
    name, alice, stored, queued, tmp_path, settings
):
    source = tmp_path / "upload.bin"
    source.write_bytes(b"not dicom")
    report = upload_ingest(sources=[(source, name)], owner=alice)
    (rejection,) = report.rejections
    shown = rejection["name"]
    assert "\x00" not in shown and ".." not in shown.split("/")
    assert not shown.startswith("/") and len(shown) <= 255
    _assert_audited(shown, rejection["reason"])
    _assert_nothing_lost(stored, queued)
    media = Path(settings.MEDIA_ROOT)
    assert all(media in p.resolve().parents for p in media.rglob("*"))


@pytest.mark.parametrize(
    "uid",
    ["1.2.3/../../x", "1.2.3\x004", "1." + "2" * 200, "../../etc/passwd"],
    ids=["climbing", "nul", "very-long", "path"],
)
def test_hostile_uids_are_refused(uid, client, alice, stored, queued, tmp_path):
    ds = pydicom.dcmread(io.BytesIO(_slices(tmp_path, "uid", count=1)[0]))
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    out = io.BytesIO()
    ds.save_as(out)
    body = _upload(client, alice, {"uid.dcm": out.getvalue()})
    (rejection,) = body["rejected"]
    assert rejection["name"] == "uid.dcm"
    assert "invalid UID: SOPInstanceUID" in rejection["reason"]
    _assert_audited("uid.dcm", rejection["reason"])
    _assert_nothing_lost(stored, queued)


def _zip_bytes(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return buffer.getvalue()


def _symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = 0o120777 << 16
    return info, target.encode()


def test_zip_slip_entries_stay_names_and_never_escape(
    client, alice, stored, queued, tmp_path, settings
):
    good = _slices(tmp_path, "zipped", count=2, patient_id="P1")
    archive = _zip_bytes(
        [
            ("../../../../tmp/evil.dcm", good[0]),
            ("/etc/cron.d/evil.dcm", good[1]),
            _symlink_entry("link.dcm", "/etc/passwd"),
        ]
    )
    body = _upload(client, alice, {"slip.zip": archive})
    (rejection,) = body["rejected"]
    assert rejection["name"] == "slip.zip/link.dcm"
    assert "symbolic link" in rejection["reason"]
    assert body["series"][0]["instances"] == 2
    names = set(
        Instance.objects.filter(series_id=body["series"][0]["id"]).values_list(
            "original_name", flat=True
        )
    )
    assert names == {"slip.zip/tmp/evil.dcm", "slip.zip/etc/cron.d/evil.dcm"}
    media = Path(settings.MEDIA_ROOT)
    assert all(media in p.resolve().parents for p in media.rglob("*"))
    assert not Path("/tmp/evil.dcm").exists()
    _assert_audited("slip.zip/link.dcm", rejection["reason"])
    _assert_nothing_lost(stored, queued)


def _media_bytes(settings) -> int:
    return sum(
        p.stat().st_size for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()
    )


def test_zip_bomb_is_stopped_with_disk_use_bounded(
    client, alice, stored, queued, tmp_path, settings, _private_temp
):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("zeros.dcm", "w", force_zip64=True) as entry:
            for _ in range(64):
                entry.write(bytes(1 << 20))
    before = _media_bytes(settings)
    body = _upload(client, alice, {"bomb.zip": buffer.getvalue()})
    (rejection,) = body["rejected"]
    assert rejection["name"] == "bomb.zip" and "zip bomb" in rejection["reason"]
    assert _media_bytes(settings) == before
    assert _leftovers(_private_temp) == []
    _assert_audited("bomb.zip", rejection["reason"])
    _assert_nothing_lost(stored, queued)


def test_zip_entry_with_an_empty_name_is_refused_by_name(
    client, alice, stored, queued, tmp_path
):
    good = _slices(tmp_path, "unnamed", count=1)[0]
    # A ZipInfo, not a str: zipfile itself cannot write an empty str name.
    body = _upload(
        client, alice, {"unnamed.zip": _zip_bytes([(zipfile.ZipInfo(""), good)])}
    )
    (rejection,) = body["rejected"]
    assert rejection["name"].startswith("unnamed.zip")
    _assert_nothing_lost(stored, queued)


def _rle_overrunning_its_frame() -> bytes:
    """RLE segments that expand past the frame: pylibjpeg-rle panics (Rust)."""
    ds = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    segment = b"\x81\x00" * 40  # 40 runs of 128 zeros: 5120 bytes, 4096 expected
    header = struct.pack("<16I", 2, 64, 64 + len(segment), *([0] * 13))
    ds.PixelData = pydicom.encaps.encapsulate([header + segment + segment])
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_decoder_panic_on_corrupt_rle_is_a_rejection(client, alice, stored, queued):
    body = _upload(client, alice, {"overrun.dcm": _rle_overrunning_its_frame()})
    (rejection,) = body["rejected"]
    assert rejection["name"] == "overrun.dcm"
    _assert_nothing_lost(stored, queued)


def test_nested_zip_is_not_opened(client, alice, stored, queued, tmp_path):
    inner = _zip_bytes([("inner.dcm", _slices(tmp_path, "nest", count=1)[0])])
    body = _upload(client, alice, {"outer.zip": _zip_bytes([("inner.zip", inner)])})
    (rejection,) = body["rejected"]
    assert rejection["name"] == "outer.zip/inner.zip"
    assert "nested zip archive is not opened" in rejection["reason"]
    _assert_audited("outer.zip/inner.zip", rejection["reason"])
    _assert_nothing_lost(stored, queued)


def test_hundred_thousand_entry_zip_is_refused_unread(
    client, alice, stored, queued, tmp_path
):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for i in range(100_000):
            archive.writestr(f"f{i}", b"")
    body = _upload(client, alice, {"many.zip": path.read_bytes()})
    (rejection,) = body["rejected"]
    assert rejection["name"] == "many.zip"
    assert (
        "100000 entries" in rejection["reason"]
        and "nothing was read" in rejection["reason"]
    )
    _assert_audited("many.zip", rejection["reason"])
    _assert_nothing_lost(stored, queued)


class _Unreadable(io.RawIOBase):
    """A request body that fails the test if anything reads more than a peek of it."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.read_bytes += len(buffer)
        raise AssertionError("the body of a refused request was read")


def test_oversized_request_is_refused_before_its_body_is_read(
    alice, stored, queued, settings
):
    from django.core.handlers.wsgi import WSGIHandler

    settings.UPLOAD_MAX_BYTES = 10 * 1024 * 1024
    body = _Unreadable()
    environ = RequestFactory()._base_environ(
        PATH_INFO="/api/uploads",
        REQUEST_METHOD="POST",
        CONTENT_TYPE="multipart/form-data; boundary=xyz",
        CONTENT_LENGTH=str(50 * 1024**3),
        **{"wsgi.input": body},
    )
    statuses = []
    chunks = WSGIHandler()(environ, lambda status, headers: statuses.append(status))
    assert statuses[0].startswith("413")
    assert b"UPLOAD_MAX_BYTES" in b"".join(chunks)
    assert body.read_bytes == 0
    assert Series.objects.count() == 1
    _assert_nothing_lost(stored, queued)


def test_too_many_files_is_refused_and_memory_stays_flat(
    client, alice, stored, queued, settings
):
    import tracemalloc

    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 50
    files = []
    for i in range(400):
        handle = io.BytesIO(b"\x00" * 4096)
        handle.name = f"f{i}.dcm"
        files.append(handle)
    client.force_login(alice)
    tracemalloc.start()
    try:
        response = client.post("/api/uploads", {"files": files})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 413
    assert "UPLOAD_MAX_FILES" in response.json()["detail"]
    assert peak < 32 * 1024 * 1024
    _assert_nothing_lost(stored, queued)


def test_failures_under_the_api_are_json_problems_not_html(
    client, alice, monkeypatch, tmp_path
):
    """An unexpected error is a JSON 500 naming its kind; a database conflict a
    409: never Django's HTML error page on a JSON endpoint."""
    from django.db import IntegrityError
    from django.test import Client

    import radiology.api

    quiet = Client(raise_request_exception=False)
    quiet.force_login(alice)
    files = {"x.dcm": _slices(tmp_path, "x", count=1)[0]}
    for error, status in ((RuntimeError("boom"), 500), (IntegrityError("dup"), 409)):

        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(radiology.api, "upload_ingest", fail)
        response = quiet.post(
            "/api/uploads",
            {"files": [SimpleUploadedFile(n, d) for n, d in files.items()]},
        )
        assert response.status_code == status
        assert response["Content-Type"] == "application/json"
        body = response.json()
        assert body["error_id"] and "detail" in body
        assert "<html" not in response.content.decode().lower()

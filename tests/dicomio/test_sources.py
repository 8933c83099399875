"""iter_members on files, folders and hostile ZIP archives."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from dicomio import DicomRejected, Limits, iter_members, sanitise_name

CT_SMALL = Path(get_testdata_file("CT_small.dcm")).read_bytes()


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _members(path: Path, **limits: int) -> list[tuple[str, str | None]]:
    return [(m.name, m.error) for m in iter_members(path, limits=Limits(**limits))]


def test_plain_file_is_one_member(tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(CT_SMALL)
    (member,) = iter_members(path, display_name="CT_small.dcm")
    assert member.name == "CT_small.dcm" and member.error is None
    assert member.read() == CT_SMALL


def test_folder_is_walked_in_sorted_order(tmp_path: Path) -> None:
    for rel in ("b/2.dcm", "a/1.dcm", "a/0.dcm", "c.dcm"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    names = [m.name for m in iter_members(tmp_path, display_name="up")]
    assert names == ["up/c.dcm", "up/a/0.dcm", "up/a/1.dcm", "up/b/2.dcm"]


def test_symlinks_in_folders_are_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"top secret")
    upload = tmp_path / "upload"
    upload.mkdir()
    (upload / "link.dcm").symlink_to(secret)
    (upload / "dir").symlink_to(tmp_path, target_is_directory=True)
    members = _members(upload)
    assert members == [
        ("upload/dir", "symbolic link is not followed"),
        ("upload/link.dcm", "symbolic link is not followed"),
    ]


def test_zip_is_detected_by_magic_bytes_not_extension(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "scan.dcm", {"IM1": CT_SMALL})
    (member,) = iter_members(archive, display_name="scan.dcm")
    assert member.name == "scan.dcm/IM1" and member.read() == CT_SMALL
    fake = tmp_path / "fake.zip"
    fake.write_bytes(CT_SMALL)
    (member,) = iter_members(fake)
    assert member.name == "fake.zip" and member.read() == CT_SMALL


def test_zip_inside_a_folder_is_expanded(tmp_path: Path) -> None:
    _zip(tmp_path / "a.zip", {"IM1": CT_SMALL})
    assert _members(tmp_path)[0] == (f"{tmp_path.name}/a.zip/IM1", None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "etc/passwd"),
        ("/etc/shadow", "etc/shadow"),
        ("..\\..\\windows\\system32", "windows/system32"),
        ("a/./b/../c", "a/b/c"),
        ("evil\x00name\n\x1b[31m.dcm", "evilname[31m.dcm"),
        ("\u202etxt.exe", "txt.exe"),
        ("..", "(unnamed)"),
    ],
)
def test_untrusted_names_are_sanitised(raw: str, expected: str) -> None:
    assert sanitise_name(raw) == expected


def test_long_names_are_capped() -> None:
    name = sanitise_name("d/" * 400 + "IM1.dcm", max_chars=64)
    assert len(name) == 64 and name.endswith("IM1.dcm") and "…" in name


def test_zip_slip_names_stay_display_names(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "scan.zip",
        {"../../etc/passwd": b"a", "/abs/path": b"b", "C:\\x\\y": b"c"},
    )
    members = _members(archive)
    assert [name for name, _ in members] == [
        "scan.zip/etc/passwd",
        "scan.zip/abs/path",
        "scan.zip/C:/x/y",
    ]
    assert not (tmp_path / "etc").exists()


def test_symlink_entries_carry_errors_and_directory_entries_are_skipped(
    tmp_path: Path,
) -> None:
    archive = tmp_path / "scan.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        link = zipfile.ZipInfo("link.dcm")
        link.create_system = 3
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr(zipfile.ZipInfo("folder/"), b"")
        zf.writestr("ok.dcm", CT_SMALL)
    assert _members(archive) == [
        ("scan.zip/link.dcm", "symbolic link entry is not followed"),
        ("scan.zip/ok.dcm", None),
    ]


def test_os_metadata_in_zips_and_folders_is_skipped_silently(tmp_path: Path) -> None:
    junk = {
        "__MACOSX/scan/._IM1": b"\x00\x05\x16\x07",
        "scan/._IM1": b"\x00\x05\x16\x07",
        "scan/.DS_Store": b"Bud1",
        "Thumbs.db": b"x",
    }
    archive = _zip(tmp_path / "mac.zip", {**junk, "scan/IM1": CT_SMALL})
    assert _members(archive) == [("mac.zip/scan/IM1", None)]
    folder = tmp_path / "folder"
    for name, data in {**junk, "scan/IM1": CT_SMALL}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    assert _members(folder) == [("folder/scan/IM1", None)]


def test_a_file_merely_named_like_metadata_elsewhere_is_read(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "scan.zip", {"MACOSX/IM1": CT_SMALL, "a._b": b"x"})
    assert [name for name, _ in _members(archive)] == [
        "scan.zip/MACOSX/IM1",
        "scan.zip/a._b",
    ]
    single = tmp_path / "upload.bin"
    single.write_bytes(b"Bud1")
    assert list(iter_members(single, display_name="scan/.DS_Store")) == []
    assert len(list(iter_members(single, display_name="scan/IM1"))) == 1


def test_encrypted_entries_carry_errors(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "scan.zip", {"secret.dcm": b"xx"})
    data = bytearray(archive.read_bytes())
    # zipfile cannot write encrypted entries: set the flag bit by hand.
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        data[data.find(signature) + flag_offset] |= 0x1
    archive.write_bytes(bytes(data))
    assert _members(archive) == [
        ("scan.zip/secret.dcm", "encrypted entry cannot be read")
    ]


def test_nested_archives_are_not_opened(tmp_path: Path) -> None:
    inner = _zip(tmp_path / "inner.zip", {"IM1": CT_SMALL}).read_bytes()
    archive = _zip(tmp_path / "outer.zip", {"inner.zip": inner, "IM2": CT_SMALL})
    members = _members(archive)
    assert members == [
        ("outer.zip/inner.zip", "nested zip archive is not opened"),
        ("outer.zip/IM2", None),
    ]


def test_member_with_error_refuses_read(tmp_path: Path) -> None:
    inner = _zip(tmp_path / "i.zip", {"IM1": CT_SMALL}).read_bytes()
    archive = _zip(tmp_path / "o.zip", {"inner.zip": inner})
    (member,) = iter_members(archive)
    with pytest.raises(DicomRejected, match="o.zip/inner.zip: nested zip archive"):
        member.read()


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 GiB of zeros deflated to about 1 MiB, written in chunks."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    zero = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("first.dcm", CT_SMALL)
        with zf.open("zeros.dcm", "w", force_zip64=True) as fh:
            for _ in range(1024):
                fh.write(zero)
        zf.writestr("after.dcm", CT_SMALL)
    return path


def test_zip_bomb_stops_the_archive_quickly(zip_bomb: Path) -> None:
    start = time.perf_counter()
    members = list(iter_members(zip_bomb, display_name="bomb.zip"))
    assert time.perf_counter() - start < 5
    assert members[0].name == "bomb.zip/first.dcm" and members[0].read() == CT_SMALL
    assert len(members) == 2
    assert members[1].name == "bomb.zip"
    assert "max_ratio 200:1" in members[1].error and "zeros.dcm" in members[1].error


def test_total_uncompressed_cap_counts_decompressed_bytes(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {f"IM{i}": CT_SMALL for i in range(5)})
    members = _members(archive, max_uncompressed_bytes=3 * len(CT_SMALL))
    assert [e for _, e in members[:3]] == [None, None, None]
    assert members[3][0] == "a.zip" and "max_uncompressed_bytes" in members[3][1]
    assert len(members) == 4


def test_entry_above_max_file_bytes_is_skipped(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"big": CT_SMALL, "small": b"tiny"})
    members = _members(archive, max_file_bytes=1000)
    assert "above max_file_bytes 1000" in members[0][1]
    assert members[1] == ("a.zip/small", None)


def test_hundred_thousand_entries_are_refused_without_parsing(tmp_path: Path) -> None:
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for i in range(100_000):
            zf.writestr(f"f{i}", b"")
    start = time.perf_counter()
    members = _members(archive)
    assert time.perf_counter() - start < 1
    assert members == [
        (
            "many.zip",
            "archive declares 100000 entries, above max_entries 20000; "
            "nothing was read",
        )
    ]


def test_truncated_zip_is_reported(tmp_path: Path) -> None:
    data = _zip(tmp_path / "a.zip", {"IM1": CT_SMALL}).read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(data[: len(data) // 2])
    ((name, error),) = _members(cut)
    assert name == "cut.zip" and error.startswith("corrupt ZIP archive")


def test_corrupt_entry_is_reported_and_archive_continues(tmp_path: Path) -> None:
    path = _zip(tmp_path / "a.zip", {"IM1": CT_SMALL, "IM2": CT_SMALL})
    data = bytearray(path.read_bytes())
    data[100:140] = bytes(40)
    path.write_bytes(bytes(data))
    members = _members(path)
    assert members[0][0] == "a.zip/IM1" and "corrupt ZIP entry" in members[0][1]
    assert members[1] == ("a.zip/IM2", None)


def test_missing_path_is_reported(tmp_path: Path) -> None:
    ((name, error),) = _members(tmp_path / "nope.dcm")
    assert name == "nope.dcm" and error.startswith("cannot open")


def test_fifo_is_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    assert _members(tmp_path) == [(f"{tmp_path.name}/pipe", "not a regular file")]


def test_limits_reject_non_positive_values() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        Limits(max_entries=0)

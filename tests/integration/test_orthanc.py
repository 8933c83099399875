"""Interop with a real Orthanc (Debian orthanc, orthanc-dicomweb) on loopback."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from dicomio.derived import device_uid
from dicomio.synthetic import phantom_volume, write_series
from radiology.services.export import series_export
from radiology.services.ingest import upload_ingest
from radiology.storage import load_array
from tests.conftest import require
from tests.radiology.test_export import job, models_root, source_dir  # noqa: F401

pytestmark = pytest.mark.django_db

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@pytest.fixture(scope="module")
def real_services():
    """Overrides the package's Redis/PostgreSQL check: Orthanc interop needs neither."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def orthanc(tmp_path):
    require(
        shutil.which("Orthanc") is not None and PLUGIN.exists(),
        "Orthanc is not installed: apt-get install orthanc orthanc-dicomweb",
    )
    port = _free_port()
    config = {
        "Name": "radiology-test",
        "StorageDirectory": str(tmp_path / "orthanc-db"),
        "IndexDirectory": str(tmp_path / "orthanc-db"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (tmp_path / "orthanc.json").write_text(json.dumps(config))
    log = open(tmp_path / "orthanc.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        ["Orthanc", str(tmp_path / "orthanc.json")], stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/system", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "Orthanc did not start: "
                    + (tmp_path / "orthanc.log").read_text()[-2000:]
                )
            time.sleep(0.2)
        yield DICOMwebClient(url=f"{base}/dicom-web")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_export_is_stored_in_orthanc_and_read_back(orthanc, job, alice, tmp_path):  # noqa: F811
    result = series_export(
        job=job, actor=alice, out_dir=tmp_path / "out", include_residual=True
    )
    sent = {}
    for path in result.files:
        ds = pydicom.dcmread(path)
        sent[ds.SOPInstanceUID] = ds
    receipt = orthanc.store_instances(list(sent.values()))
    assert len(receipt.ReferencedSOPSequence) == len(sent)
    for exported in result.series:
        first = sent[pydicom.dcmread(exported.files[0]).SOPInstanceUID]
        back = orthanc.retrieve_series(
            first.StudyInstanceUID, exported.series_instance_uid
        )
        assert len(back) == len(exported.files)
        for ds in back:
            original = sent[ds.SOPInstanceUID]
            assert ds.PixelData == original.PixelData
            assert ds.ImageType[:2] == ["DERIVED", "SECONDARY"]
            assert ds.FrameOfReferenceUID == original.FrameOfReferenceUID
            assert ds.ContributingEquipmentSequence[-1].DeviceUID == device_uid(
                job.weights_sha256
            )


def test_series_is_pulled_from_orthanc_into_the_app(orthanc, alice, tmp_path):
    volume = phantom_volume((3, 32, 32), seed=4)
    paths = write_series(tmp_path / "pacs", volume, spacing_mm=(3, 0.7, 0.7))
    datasets = [pydicom.dcmread(p) for p in paths]
    orthanc.store_instances(datasets)

    (found,) = orthanc.search_for_series(
        search_filters={"SeriesInstanceUID": datasets[0].SeriesInstanceUID}
    )
    pulled = orthanc.retrieve_series(
        found["0020000D"]["Value"][0], found["0020000E"]["Value"][0]
    )
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for index, ds in enumerate(pulled):
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds)
        (inbox / f"{index}.dcm").write_bytes(buffer.getvalue())
    report = upload_ingest(sources=[(inbox, "orthanc")], owner=alice)
    assert report.rejections == []
    (series,) = report.series
    assert series.series_instance_uid == datasets[0].SeriesInstanceUID
    np.testing.assert_allclose(load_array(series.volume_file), volume, atol=0.5)

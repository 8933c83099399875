"""DICOMweb (STOW-RS, QIDO-RS, WADO-RS) driven by dicomweb-client on the live server."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from django.test import Client
from django.utils.crypto import get_random_string

from dicomio.synthetic import phantom_volume, write_series
from radiology.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)


def session_for(user) -> requests.Session:
    """A requests session logged in as ``user``, with a CSRF cookie and header."""
    client = Client()
    client.force_login(user)
    session = requests.Session()
    session.cookies.set("sessionid", client.cookies["sessionid"].value)
    csrf = get_random_string(32)
    session.cookies.set("csrftoken", csrf)
    session.headers["X-CSRFToken"] = csrf
    return session


def dicomweb(live_server, session: requests.Session) -> DICOMwebClient:
    return DICOMwebClient(url=f"{live_server.url}/dicomweb", session=session)


@pytest.fixture
def datasets(tmp_path):
    paths = write_series(
        tmp_path / "s", phantom_volume((3, 24, 24), seed=9), spacing_mm=(2, 1, 1)
    )
    return [pydicom.dcmread(p) for p in paths]


def sent_bytes(ds: pydicom.Dataset) -> bytes:
    """The bytes dicomweb-client puts on the wire for ``ds`` (see store_instances)."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds)
    return buffer.getvalue()


def test_store_find_and_retrieve_byte_identical(live_server, alice, datasets):
    client = dicomweb(live_server, session_for(alice))
    study_uid = datasets[0].StudyInstanceUID
    series_uid = datasets[0].SeriesInstanceUID

    receipt = client.store_instances(datasets)
    assert len(receipt.ReferencedSOPSequence) == 3
    assert "FailedSOPSequence" not in receipt

    studies = client.search_for_studies(search_filters={"PatientID": "ANON"})
    assert [s["0020000D"]["Value"][0] for s in studies] == [study_uid]
    assert studies[0]["00201208"]["Value"] == [3]
    series = client.search_for_series(study_uid, search_filters={"Modality": "CT"})
    assert [s["0020000E"]["Value"][0] for s in series] == [series_uid]
    instances = client.search_for_instances(study_uid, series_uid)
    assert {i["00080018"]["Value"][0] for i in instances} == {
        ds.SOPInstanceUID for ds in datasets
    }

    # dicomweb-client sends a Host header without the port, so the server's
    # RetrieveURLs name port 80 here; build the instance URL from the live server.
    base = f"{live_server.url}/dicomweb/studies/{study_uid}/series/{series_uid}"
    for ds in datasets:
        (raw,) = client.retrieve_bulkdata(f"{base}/instances/{ds.SOPInstanceUID}")
        assert hashlib.sha256(raw).digest() == hashlib.sha256(sent_bytes(ds)).digest()
    retrieved = client.retrieve_series(study_uid, series_uid)
    assert {r.SOPInstanceUID for r in retrieved} == {
        ds.SOPInstanceUID for ds in datasets
    }


def test_metadata_and_frames(live_server, alice, datasets):
    client = dicomweb(live_server, session_for(alice))
    client.store_instances(datasets)
    ds = datasets[1]
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    meta = client.retrieve_instance_metadata(*uids)
    assert meta["00080018"]["Value"] == [ds.SOPInstanceUID]
    assert "BulkDataURI" in meta["7FE00010"]
    (frame,) = client.retrieve_instance_frames(*uids, frame_numbers=[1])
    assert frame == ds.PixelData
    assert np.array_equal(
        np.frombuffer(frame, dtype="<i2").reshape(24, 24), ds.pixel_array
    )
    series_meta = client.retrieve_series_metadata(*uids[:2])
    assert len(series_meta) == 3


def test_other_users_data_is_not_found(live_server, alice, bob, datasets):
    dicomweb(live_server, session_for(alice)).store_instances(datasets)
    ds = datasets[0]
    other = dicomweb(live_server, session_for(bob))
    assert other.search_for_studies() == []
    with pytest.raises(requests.HTTPError) as info:
        other.retrieve_instance(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
        )
    assert info.value.response.status_code == 404
    with pytest.raises(requests.HTTPError) as info:
        other.search_for_series(ds.StudyInstanceUID)
    assert info.value.response.status_code == 404
    assert AuditEvent.objects.filter(
        action=AuditEvent.Action.ACCESS_DENIED, actor_name="bob"
    ).exists()


def test_bearer_token_authenticates_a_client(live_server, alice, datasets):
    token = "dicomweb-test-token"
    ApiToken.objects.create(
        user=alice, key_sha256=hashlib.sha256(token.encode()).hexdigest()
    )
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    probe = session.get(
        f"{live_server.url}/dicomweb/studies", allow_redirects=False, timeout=10
    )
    assert probe.status_code == 200, (
        "LoginRequiredMiddleware must let /dicomweb/ through, as it does /api/: "
        "the DICOMweb views authenticate (session or Bearer) and answer 401 themselves"
    )
    client = dicomweb(live_server, session)
    receipt = client.store_instances(datasets[:1])
    assert len(receipt.ReferencedSOPSequence) == 1
    assert len(client.search_for_instances()) == 1


def test_anonymous_and_bad_token_requests_are_refused(live_server):
    url = f"{live_server.url}/dicomweb/studies"
    anonymous = requests.get(url, allow_redirects=False, timeout=10)
    assert anonymous.status_code in (302, 401)
    wrong = requests.get(
        url, headers={"Authorization": "Bearer nope"}, allow_redirects=False, timeout=10
    )
    assert wrong.status_code in (302, 401)


def test_session_store_without_csrf_is_refused(live_server, alice, datasets):
    session = session_for(alice)
    del session.headers["X-CSRFToken"]
    with pytest.raises(requests.HTTPError) as info:
        dicomweb(live_server, session).store_instances(datasets[:1])
    assert info.value.response.status_code == 403


def test_store_reports_files_that_are_not_dicom(live_server, alice, datasets):
    session = session_for(alice)
    boundary = "b0undary"
    body = (
        b"".join(
            b"\r\n--"
            + boundary.encode()
            + b"\r\nContent-Type: application/dicom\r\n\r\n"
            + part
            for part in (sent_bytes(datasets[0]), b"not a dicom file")
        )
        + b"\r\n--"
        + boundary.encode()
        + b"--"
    )
    response = session.post(
        f"{live_server.url}/dicomweb/studies",
        data=body,
        headers={
            "Content-Type": 'multipart/related; type="application/dicom"; '
            f"boundary={boundary}"
        },
        timeout=30,
    )
    assert response.status_code == 202
    result = response.json()
    assert len(result["00081199"]["Value"]) == 1
    assert len(result["00081198"]["Value"]) == 1
    assert "not a DICOM instance" in response.headers["Warning"]


def test_unknown_query_attribute_is_a_clear_400(live_server, alice):
    response = session_for(alice).get(
        f"{live_server.url}/dicomweb/studies?BogusKeyword=1", timeout=10
    )
    assert response.status_code == 400
    assert "BogusKeyword" in response.json()["detail"]
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("*chest*", "CT Chest w/o", True),
        ("ct?chest*", "CT Chest", True),
        ("ct?chest", "CT  Chest", False),
        ("*", "", True),
        ("?", "", False),
        ("a*b*c", "aXXbYYc", True),
        ("a*b*c", "aXXcYYb", False),
        # Exponential for a backtracking regex; a few thousand steps here.
        ("*a*a*a*a*a*a*b", "a" * 256, False),
        ("*a*a*a*a*a*a*b", "a" * 255 + "b", True),
    ],
)
def test_wildcards_match_in_bounded_time(pattern, text, expected):
    from radiology.dicomweb.qido import wildcard_match

    assert wildcard_match(pattern, text) is expected


def test_wildcard_queries_match_and_long_patterns_are_refused(
    live_server, alice, datasets
):
    session = session_for(alice)
    dicomweb(live_server, session).store_instances(datasets)
    base = f"{live_server.url}/dicomweb/studies"
    found = session.get(f"{base}?StudyDescription=*YNTHET?C*", timeout=10)
    assert found.status_code == 200 and len(found.json()) == 1
    missed = session.get(f"{base}?StudyDescription=*a*a*a*a*b", timeout=10)
    assert missed.status_code == 204 or missed.json() == []
    refused = session.get(f"{base}?StudyDescription={'*a' * 9}", timeout=10)
    assert refused.status_code == 400
    assert "and 8 wildcards" in refused.json()["detail"]


def test_a_frame_asked_for_many_times_is_refused(
    live_server, alice, datasets, monkeypatch
):
    """A thousand copies of one frame made a 524 MB answer: at most as many frames
    as the instance has, and a response-size cap."""
    import radiology.dicomweb.wado

    session = session_for(alice)
    dicomweb(live_server, session).store_instances(datasets)
    ds = datasets[0]
    url = (
        f"{live_server.url}/dicomweb/studies/{ds.StudyInstanceUID}/series/"
        f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/"
    )
    repeated = session.get(url + ",".join(["1"] * 1000), timeout=10)
    assert repeated.status_code == 400
    assert "at most 1 per request" in repeated.json()["detail"]
    monkeypatch.setattr(radiology.dicomweb.wado, "MAX_FRAMES_BYTES", 100)
    too_big = session.get(url + "1", timeout=10)
    assert too_big.status_code == 413 and "per response" in too_big.json()["detail"]

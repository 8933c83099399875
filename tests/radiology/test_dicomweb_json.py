"""DICOM JSON for DICOMweb answers: pydicom's encoding, read back by pydicom."""

from __future__ import annotations

import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file

from radiology.dicomweb import dicom_json
from radiology.models import Instance, Series, Study

BASE = "http://testserver/dicomweb"


@pytest.fixture
def study() -> Study:
    return Study(
        study_instance_uid="1.2.3",
        patient_id="P9",
        description="HEAD\\NECK",
        study_date="",
    )


@pytest.fixture
def series(study) -> Series:
    return Series(
        study=study,
        series_instance_uid="1.2.3.4",
        modality="CT",
        description="",
        instance_count=3,
    )


def test_a_series_result_is_the_documented_wire_format(series):
    assert dicom_json.series_attributes(BASE, series) == {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "00080020": {"vr": "DA"},
        "00080060": {"vr": "CS", "Value": ["CT"]},
        "0008103E": {"vr": "LO"},
        "00081190": {"vr": "UR", "Value": [f"{BASE}/studies/1.2.3/series/1.2.3.4"]},
        "00100020": {"vr": "LO", "Value": ["P9"]},
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
        "00201209": {"vr": "IS", "Value": [3]},
    }


def test_a_study_result_reads_back_with_pydicom(study, series):
    other = Series(study=study, series_instance_uid="1.2.3.5", modality="MR")
    data = dicom_json.study_attributes(BASE, study, [series, other, series], 7)
    ds = Dataset.from_json(data)
    assert ds.StudyInstanceUID == "1.2.3"
    assert list(ds.ModalitiesInStudy) == ["CT", "MR"]
    assert ds.NumberOfStudyRelatedSeries == 3
    assert ds.NumberOfStudyRelatedInstances == 7
    assert ds.RetrieveURL == f"{BASE}/studies/1.2.3"
    # Empty attributes are present with no value; a stored backslash is not a
    # value separator.
    assert "StudyDate" in ds and ds.StudyDate == ""
    assert data["00081030"] == {"vr": "LO", "Value": ["HEAD\\NECK"]}


def test_an_instance_result_reads_back_with_pydicom(series):
    instance = Instance(
        series=series,
        sop_instance_uid="1.2.3.4.5",
        sop_class_uid=pydicom.uid.CTImageStorage,
        frame_count=2,
    )
    ds = Dataset.from_json(dicom_json.instance_attributes(BASE, instance))
    assert ds.SOPClassUID == pydicom.uid.CTImageStorage
    assert ds.SOPInstanceUID == "1.2.3.4.5"
    assert ds.NumberOfFrames == 2
    assert ds.RetrieveURL.endswith("/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5")


def test_a_store_result_keeps_its_sequences_in_order_and_reads_back():
    url = f"{BASE}/studies/1.2.3/series/4/instances/5"
    data = dicom_json.store_result(
        retrieve_url=f"{BASE}/studies/1.2.3",
        referenced=[dicom_json.referenced_sop("1.2.840.10008.5.1.4.1.1.2", "5", url)],
        failed=[dicom_json.failed_sop("", "", 0xC000)],
    )
    assert list(data) == ["00081190", "00081199", "00081198"]
    assert data["00081198"]["Value"] == [
        {
            "00081150": {"vr": "UI"},
            "00081155": {"vr": "UI"},
            "00081197": {"vr": "US", "Value": [0xC000]},
        }
    ]
    ds = Dataset.from_json(data)
    assert ds.ReferencedSOPSequence[0].RetrieveURL == url
    assert ds.FailedSOPSequence[0].FailureReason == 0xC000
    assert dicom_json.store_result(retrieve_url=None, referenced=[], failed=[]) == {}


def test_metadata_is_pydicoms_encoding_with_bulk_data_as_uris():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    ds.EncapsulatedDocument = b"\x01" * (dicom_json.BULK_DATA_THRESHOLD + 2)
    url = f"{BASE}/studies/1/series/2/instances/3"
    data = dicom_json.instance_metadata(ds, url)
    assert data["7FE00010"] == {"vr": "OW", "BulkDataURI": f"{url}/frames/1"}
    assert data["00420011"] == {"vr": "OB", "BulkDataURI": url}
    fetched = []
    back = Dataset.from_json(
        data, bulk_data_uri_handler=lambda tag, vr, uri: fetched.append(uri) or b""
    )
    assert sorted(fetched) == [url, f"{url}/frames/1"]
    for keyword in ("PatientName", "StudyInstanceUID", "Rows", "PixelSpacing"):
        assert back[keyword].value == ds[keyword].value


def test_an_unknown_keyword_is_refused():
    with pytest.raises(ValueError, match="NotAKeyword"):
        dicom_json.dataset(NotAKeyword="x")

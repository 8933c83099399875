"""Display geometry: planes labelled from IOP, radiological orientation, edge letters,
and when reformats are offered."""

from __future__ import annotations

import pytest

from dicomio.orientation import direction_letters, display_geometry
from dicomio.synthetic import phantom_volume, write_series
from radiology.services.ingest import upload_ingest


def _summary(planes: dict) -> dict:
    return {
        name: (
            g["label"],
            g["col_axis"],
            g["col_flip"],
            g["row_axis"],
            g["row_flip"],
            " ".join(g["markers"][e] for e in ("left", "right", "top", "bottom")),
        )
        for name, g in planes.items()
    }


def test_a_standard_axial_series_is_shown_as_stored_with_its_letters() -> None:
    display = display_geometry([1, 0, 0, 0, 1, 0], [40, 64, 64], [])
    assert display["acquired"] == "axial" and display["orientation_known"]
    assert _summary(display["planes"]) == {
        "axial": ("axial", 2, False, 1, False, "R L A P"),
        "coronal": ("coronal", 2, False, 0, True, "R L H F"),
        "sagittal": ("sagittal", 1, False, 0, True, "A P H F"),
    }
    assert display["reformats"] == {"available": True, "reason": None}


def test_a_series_stored_upside_down_is_flipped_back() -> None:
    # pydicom-data explicit_VR-UN: columns run anterior, slices sorted downwards.
    display = display_geometry([1, 0, 0, 0, -1, 0], [40, 64, 64], [])
    summary = _summary(display["planes"])
    assert summary["axial"] == ("axial", 2, False, 1, True, "R L A P")
    assert summary["coronal"] == ("coronal", 2, False, 0, False, "R L H F")
    assert summary["sagittal"] == ("sagittal", 1, True, 0, False, "A P H F")


def test_coronal_and_sagittal_acquisitions_are_labelled_from_the_geometry() -> None:
    coronal = display_geometry([1, 0, 0, 0, 0, -1], [20, 64, 64], [])
    assert coronal["acquired"] == "coronal"
    assert _summary(coronal["planes"])["axial"] == (
        "coronal",
        2,
        False,
        1,
        False,
        "R L H F",
    )
    assert _summary(coronal["planes"])["coronal"][0] == "axial"
    sagittal = display_geometry([0, 1, 0, 0, 0, -1], [20, 64, 64], [])
    assert sagittal["acquired"] == "sagittal"
    # Anterior on the left, head up.
    assert _summary(sagittal["planes"])["axial"] == (
        "sagittal",
        2,
        False,
        1,
        False,
        "A P H F",
    )
    # Its axial reformat: columns from the slices (which run right), so flipped.
    assert _summary(sagittal["planes"])["coronal"] == (
        "axial",
        0,
        True,
        2,
        False,
        "R L A P",
    )


def test_an_oblique_coronal_mr_is_not_called_axial() -> None:
    # Coronal tilted 30 degrees about the left-right axis.
    display = display_geometry([1, 0, 0, 0, 0.5, -0.866], [20, 64, 64], [])
    assert display["acquired"] == "oblique coronal"
    acquired = display["planes"]["axial"]
    assert acquired["plane"] == "coronal" and acquired["tilt_degrees"] == pytest.approx(
        30, abs=0.1
    )
    assert acquired["markers"]["top"] == "HA" and acquired["markers"]["bottom"] == "FP"


def test_a_double_oblique_stack_still_gets_three_different_planes() -> None:
    # About 45 degrees in two directions (a cardiac MR view): naming each plane by
    # its own largest component gave two "axial" planes and lost one.
    display = display_geometry(
        [-0.198, 0.705, -0.681, -0.158, -0.708, -0.688], [20, 64, 64], []
    )
    kinds = sorted(g["plane"] for g in display["planes"].values())
    assert kinds == ["axial", "coronal", "sagittal"]
    assert all(g["label"].startswith("oblique") for g in display["planes"].values())


def test_reformats_are_refused_with_the_reason() -> None:
    few = display_geometry([1, 0, 0, 0, 1, 0], [3, 64, 64], [])
    assert few["reformats"] == {
        "available": False,
        "reason": "only 3 slice(s); reformats need 8",
    }
    uneven = display_geometry(
        [1, 0, 0, 0, 1, 0],
        [40, 64, 64],
        ["uneven slice spacing (median spacing 2.5 mm): 4 mm between ..."],
    )
    assert uneven["reformats"]["reason"] == "the slice spacing is uneven"
    unknown = display_geometry(
        [],
        [40, 64, 64],
        [
            "ImagePositionPatient or ImageOrientationPatient missing on 40 of 40 "
            "slices; slices ordered by InstanceNumber"
        ],
    )
    assert not unknown["orientation_known"] and unknown["acquired"] == "as stored"
    assert unknown["planes"]["axial"]["markers"] is None
    assert unknown["reformats"]["reason"] == "slice positions are unknown"


def test_direction_letters() -> None:
    assert direction_letters([1, 0, 0]) == "L"
    assert direction_letters([0, -1, 0]) == "A"
    assert direction_letters([0, 0, -1]) == "F"
    assert direction_letters([0, 0.5, 0.866]) == "HP"
    assert direction_letters([0.1, 0.2, 0.97]) == "H"
    assert direction_letters([0, 0, 0]) == ""


@pytest.mark.django_db
def test_the_series_api_carries_the_display_geometry(client, alice, tmp_path) -> None:
    folder = tmp_path / "flipped"
    write_series(
        folder,
        phantom_volume((10, 32, 32), seed=3),
        spacing_mm=(2.0, 0.5, 0.5),
        origin=(-8.0, 8.0, 100.0),
        orientation=(1, 0, 0, 0, -1, 0),
    )
    (series,) = upload_ingest(sources=[(folder, "flipped")], owner=alice).series
    client.force_login(alice)
    display = client.get(f"/api/series/{series.pk}").json()["display"]
    axial = display["planes"]["axial"]
    assert axial["row_flip"] and axial["markers"]["top"] == "A"
    # Slices stored along the normal (0, 0, -1): from z = 100 mm downwards.
    assert axial["location_axis"] == "z"
    assert axial["location_mm"] == pytest.approx(100.0)
    assert axial["step_mm"] == pytest.approx(-2.0)
    assert display["planes"]["coronal"]["location_axis"] == "y"
    assert display["planes"]["coronal"]["step_mm"] == pytest.approx(-0.5)


@pytest.mark.django_db
def test_any_series_can_be_viewed_and_says_why_it_is_not_denoised(
    client, alice, tmp_path, settings
) -> None:
    import inference
    from inference.networks import build_network
    from tests.inference.inference_fixtures import REDCNN, metadata

    root = tmp_path / "models"
    inference.write_bundle(
        root / "tiny" / "1.0.0",
        metadata=metadata("tiny", "1.0.0"),
        state_dict=build_network(REDCNN),
    )
    (root / "DEFAULT").write_text("tiny\n")
    settings.MODELS_ROOT, settings.DENOISE_DEFAULT_MODEL = root, ""
    inference.clear_cache()
    client.force_login(alice)
    made = {}
    for modality in ("CT", "MR"):
        folder = tmp_path / modality
        write_series(folder, phantom_volume((4, 32, 32), seed=1), modality=modality)
        (made[modality],) = upload_ingest(
            sources=[(folder, modality)], owner=alice
        ).series
    ct = client.get(f"/series/{made['CT'].pk}/view/").content.decode()
    assert 'data-job-id=""' in ct and "Original only" in ct and "not denoised" not in ct
    mr = client.get(f"/series/{made['MR'].pk}/view/").content.decode()
    assert "not denoised, no MR model is registered" in mr
    made["CT"].derived = True
    made["CT"].save()
    derived = client.get(f"/series/{made['CT'].pk}/view/").content.decode()
    assert (
        "this app&#x27;s own output (a denoised or residual series) is never" in derived
    )
    page = client.get(f"/series/{made['CT'].pk}/").content.decode()
    assert f'href="/series/{made["CT"].pk}/view/"' in page


@pytest.mark.django_db
def test_thumbnails_are_the_right_way_up_and_list_the_studys_series(
    client, alice, bob, tmp_path
) -> None:
    import io

    import numpy as np
    from PIL import Image

    volume = np.minimum(phantom_volume((5, 64, 64), seed=4), 150.0)
    volume[:, 2:8, 20:44] = 1000.0  # stored rows 2-7: the patient's back (flipped)
    folder = tmp_path / "flipped"
    write_series(
        folder,
        volume,
        spacing_mm=(2.0, 0.5, 0.5),
        orientation=(1, 0, 0, 0, -1, 0),
        study_uid="1.2.826.0.1.3680043.10.7",
    )
    second = tmp_path / "second"
    write_series(
        second,
        phantom_volume((3, 32, 32), seed=5),
        study_uid="1.2.826.0.1.3680043.10.7",
        description="Second",
    )
    report = upload_ingest(sources=[(folder, "f"), (second, "s")], owner=alice)
    flipped = next(s for s in report.series if s.description != "Second")
    client.force_login(alice)
    response = client.get(f"/api/series/{flipped.pk}/thumbnail?size=64")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    picture = np.asarray(Image.open(io.BytesIO(response.content)))
    assert picture.shape == (64, 64)
    bright = np.flatnonzero(picture[:, 32] == 255)
    assert bright.size and bright.min() > 48  # at the bottom, as the viewer shows it
    cached = client.get(
        f"/api/series/{flipped.pk}/thumbnail?size=64",
        HTTP_IF_NONE_MATCH=response["ETag"],
    )
    assert cached.status_code == 304
    assert client.get(f"/api/series/{flipped.pk}/thumbnail?size=4").status_code == 400
    listed = client.get(f"/api/series/{flipped.pk}").json()["study_series"]
    assert [s["id"] for s in listed] == [s.pk for s in report.series]
    assert all(s["compare_job"] is None for s in listed)
    client.force_login(bob)
    assert client.get(f"/api/series/{flipped.pk}/thumbnail").status_code == 404


@pytest.mark.django_db
def test_a_tilted_gantry_series_says_so_and_offers_no_reformats(alice, tmp_path):
    """The shared real head CT steps 16.5 degrees off its normal; here 10 degrees:
    the stored grid is sheared, so reformats are refused with that reason."""
    import math

    import pydicom

    folder = tmp_path / "tilted"
    paths = write_series(
        folder, phantom_volume((10, 32, 32), seed=2), spacing_mm=(2.0, 0.5, 0.5)
    )
    for k, path in enumerate(sorted(paths)):
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + k * 2.0 * math.tan(math.radians(10)), z]
        ds.save_as(path)
    (series,) = upload_ingest(sources=[(folder, "tilted")], owner=alice).series
    assert any(
        w.startswith("gantry tilt: the slices step 10.0 degrees")
        for w in series.warnings
    )
    display = display_geometry(series.orientation, series.shape, series.warnings)
    assert display["reformats"] == {
        "available": False,
        "reason": "the slices are sheared (gantry tilt)",
    }

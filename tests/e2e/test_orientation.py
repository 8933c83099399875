"""The viewer shows a series stored upside down the right way up, with its letters."""

from __future__ import annotations

import numpy as np
import pytest

from dicomio.synthetic import phantom_volume, write_series
from radiology.models import DenoiseJob
from tests.e2e.conftest import sign_in, upload_files

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SHAPE = (10, 96, 96)

#: Brightness down the middle column of the original pane, after two frames.
PROFILE = (
    "async () => { await new Promise((r) => requestAnimationFrame(() =>"
    " requestAnimationFrame(r)));"
    " const c = document.querySelector('.pane[data-pane=original] canvas');"
    " const d = c.getContext('2d').getImageData(c.width >> 1, 0, 1, c.height).data;"
    " return Array.from({length: c.height}, (_, i) => d[4 * i]); }"
)


def _bright_rows(page) -> np.ndarray:
    """Where the white bar is down the middle of the original pane (0 top, 1
    bottom), measured with the letters and text hidden (L)."""
    if page.evaluate("window.viewer.state.overlay"):
        page.keyboard.press("l")
    profile = np.asarray(page.evaluate(PROFILE))
    page.keyboard.press("l")
    return np.flatnonzero(profile >= 250) / len(profile)


def test_a_series_stored_upside_down_is_shown_posterior_down_with_letters(
    live_server, alice, models_root, in_process_worker, browser_page, shot, tmp_path
):
    # pydicom-data's explicit_VR-UN abdomen: columns run anterior (IOP 1,0,0,0,-1,0),
    # so stored row 0 is the patient's back. A bright bar lies there (the table).
    volume = np.minimum(phantom_volume(SHAPE, seed=5), 150.0)  # no bone: the bar
    volume[:, 4:10, 30:66] = 1000.0  # alone is white in the soft-tissue window
    files = write_series(
        tmp_path / "flipped",
        volume,
        spacing_mm=(2.0, 0.8, 0.8),
        origin=(-38.0, 38.0, 40.0),
        orientation=(1, 0, 0, 0, -1, 0),
        patient_id="E2E-2",
        description="Flipped abdomen",
    )
    page = browser_page
    base = live_server.url
    sign_in(page, base)
    upload_files(page, base, files)
    for _ in range(120):
        assert not in_process_worker, in_process_worker
        job = DenoiseJob.objects.filter(series__description="Flipped abdomen").first()
        if job and job.status == DenoiseJob.Status.SUCCEEDED:
            break
        page.wait_for_timeout(500)
    # Any series can be viewed without a job: the original alone, same geometry.
    page.goto(f"{base}/series/{job.series_id}/view/")
    page.wait_for_selector("#viewer[data-loaded='1']")
    page.wait_for_function("window.viewer.stats.frames > 0")
    assert "Original only" in page.locator("#original-only").inner_text()
    assert not page.locator(".pane[data-pane=denoised]").is_visible()
    assert not page.locator("#verdict-card").is_visible()
    assert page.get_attribute(".pane[data-pane=original]", "data-markers") == "R L A P"
    rows = _bright_rows(page)
    assert rows.size and rows.min() > 0.6, rows
    shot("original-only")
    # Nothing to swipe, flicker or blend against: those keys do nothing here.
    for key in ("m", "f", "["):
        page.keyboard.press(key)
    assert page.evaluate("[window.viewer.state.mode, window.viewer.state.alpha]") == [
        "side",
        1,
    ]

    page.goto(f"{base}/jobs/{job.pk}/compare/")
    page.wait_for_selector("#viewer[data-loaded='1']")
    page.wait_for_function("window.viewer.stats.frames > 0")

    assert page.get_attribute("#viewer", "data-acquired") == "axial"
    assert page.locator("#slice-label").inner_text().startswith("axial 6/10")
    original = ".pane[data-pane=original]"
    assert page.get_attribute(original, "data-markers") == "R L A P"
    # The bar (the patient's back) is shown at the bottom, not the top.
    rows = _bright_rows(page)
    assert rows.size and rows.min() > 0.6, rows
    # The readout under the bar reads the bar's value: pointer and pixels agree.
    box = page.locator(f"{original} canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * rows.mean())
    readout = page.locator(f"{original} .readout").inner_text()
    assert float(readout.split()[0]) > 900, readout
    # Patient, study and slice text, and it goes away for a screenshot (L).
    overlay = page.get_attribute("#viewer", "data-overlay")
    assert (
        "E2E-2" in overlay and "2000-01-01" in overlay and "z 30.0 mm" in overlay
    )  # slice 6: 40 - 5 x 2
    assert "Flipped abdomen" in overlay
    shot("orientation-axial")
    page.keyboard.press("l")
    page.wait_for_function("document.querySelector('#viewer').dataset.overlay === ''")
    page.keyboard.press("l")

    # The coronal reformat: head up, the bar (posterior) is not in the middle slice,
    # and the labels say so.
    page.keyboard.press("c")
    page.wait_for_function("window.viewer.state.plane === 'coronal'")
    page.wait_for_function(
        "document.querySelector('#slice-label').textContent.startsWith('coronal')"
    )
    assert page.get_attribute(original, "data-markers") == "R L H F"
    # Slices run down from z = 40 mm: the top row of the coronal is the first slice.
    assert page.evaluate("window.viewer.vol.display.planes.coronal.row_flip") is False
    shot("orientation-coronal")
    # Coronal slices follow the stored rows: the bar is in rows 4-9, not at the
    # anterior end.
    depth = page.evaluate("window.viewer.vol.shape[1]")
    page.keyboard.press("End")
    page.wait_for_function(f"window.viewer.state.index.coronal === {depth - 1}")
    assert _bright_rows(page).size == 0
    page.keyboard.press("Home")
    for _ in range(6):
        page.keyboard.press("ArrowDown")
    page.wait_for_function("window.viewer.state.index.coronal === 6")
    assert _bright_rows(page).size > 0


def test_an_oblique_coronal_series_is_labelled_and_lettered_from_its_geometry(
    live_server, alice, models_root, browser_page, tmp_path
):
    # Coronal tilted 30 degrees: rows run down and back (IOP 1,0,0, 0,0.5,-0.866).
    files = write_series(
        tmp_path / "oblique",
        np.minimum(phantom_volume((6, 64, 64), seed=6), 150.0),
        spacing_mm=(3.0, 1.0, 1.0),
        orientation=(1, 0, 0, 0, 0.5, -0.866),
        patient_id="E2E-3",
        description="Oblique coronal",
    )
    junk = [tmp_path / "notes.txt", tmp_path / "scan.jpg"]
    junk[0].write_text("not an image")
    junk[1].write_bytes(b"\xff\xd8\xff\xe0 not dicom either")
    page = browser_page
    base = live_server.url
    sign_in(page, base)
    upload_files(page, base, [*files, *junk])
    # The two rejections come grouped under what went wrong, not one per line.
    groups = page.locator(".rejection-groups > li summary").all_inner_texts()
    assert sum(int(g.rsplit(": ", 1)[1].split()[0]) for g in groups) == 2, groups
    assert len(groups) == 1, groups
    page.goto(f"{base}/")
    # Each row carries its series' thumbnail.
    page.wait_for_function(
        "(() => { const i = document.querySelector('#studies img.thumb');"
        " return i && i.complete && i.naturalWidth > 0; })()"
    )
    page.click("#studies tr[data-series-id] a:has-text('View')")
    page.wait_for_selector("#viewer[data-loaded='1']")
    page.wait_for_function("window.viewer.stats.frames > 0")
    assert page.get_attribute("#viewer", "data-acquired") == "oblique coronal"
    assert page.locator("#slice-label").inner_text().startswith("oblique coronal")
    # Head-and-anterior up, foot-and-posterior down, left on the right.
    assert (
        page.get_attribute(".pane[data-pane=original]", "data-markers") == "R L HA FP"
    )
    # The Cor button is the stored slices; 6 slices are too few for reformats.
    assert (
        page.get_attribute("button[data-anatomical=coronal]", "data-plane") == "axial"
    )
    assert page.locator("button[data-anatomical=axial]").is_disabled()
    assert "No reformats: only 6 slice(s)" in page.locator("#plane-note").inner_text()

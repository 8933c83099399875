"""A reviewer in a real browser: upload, progress, compare, ROI, verdict, audit."""

from __future__ import annotations

import re
import time

import numpy as np
import pydicom
import pytest

from dicomio.synthetic import phantom_volume, write_series
from radiology.models import DenoiseJob, Review, Series
from radiology.storage import load_array
from tests.e2e.conftest import patch_script, sign_in, upload_files

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SHAPE = (12, 96, 96)


@pytest.fixture
def dicom_files(tmp_path):
    files = write_series(
        tmp_path / "dicom",
        phantom_volume(SHAPE, seed=11),
        spacing_mm=(2.5, 0.8, 0.8),
        modality="CT",
        patient_id="E2E-1",
        description="E2E chest",
    )
    for path in files:  # the scanner's own windows, two of them
        ds = pydicom.dcmread(path)
        ds.WindowCenter = [50, 300]
        ds.WindowWidth = [350, 1500]
        ds.WindowCenterWidthExplanation = ["ABDOMEN", "WIDE"]
        ds.save_as(path)
    return files


def test_reviewer_uploads_compares_measures_and_records_a_verdict(
    live_server, alice, models_root, dicom_files, in_process_worker, browser_page, shot
):
    page = browser_page
    base = live_server.url

    sign_in(page, base)
    shot("studies-empty")

    upload_files(page, base, dicom_files)
    assert page.locator("tr.file.accepted").count() == len(dicom_files)
    shot("upload-done")

    page.goto(f"{base}/")
    row = page.locator("#studies tr[data-series-id]").first
    row.wait_for()
    # The patient's name (ID below it) and ISO dates, never raw UIDs or locale dates.
    assert row.locator("td.patient").inner_text().split("\n") == [
        "Synthetic, Phantom",
        "E2E-1",
    ]
    assert "2000-01-01" in row.locator("td.study").inner_text()
    assert re.fullmatch(
        r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", row.locator("td").nth(5).inner_text()
    )
    shot("studies-progress")
    compare = page.locator("#studies tr[data-status=succeeded] a:has-text('Compare')")
    for _ in range(120):
        assert not in_process_worker, in_process_worker
        if compare.count():
            break
        page.wait_for_timeout(500)
    shot("studies-succeeded")
    # Two slices per slab, and the residual slab of the slice shown first (6 of 12)
    # arrives last: the windows must still be measured on that slice's own data.
    patch_script(
        page,
        "/viewer/loading.js",
        "const SLAB_BYTES = 4 * 1024 * 1024;",
        f"const SLAB_BYTES = {SHAPE[1] * SHAPE[2] * 2 * 2};",
    )
    delayed = []
    page.route(
        re.compile(r"/volume/residual\?z0=6&z1=8$"),
        lambda route: (delayed.append(route), time.sleep(1.5), route.continue_()),
    )
    page.click("#studies tr[data-status=succeeded] a:has-text('Compare')")

    page.wait_for_selector("#viewer[data-loaded='1']")
    assert len(delayed) == 1  # the shown slice's own two-slice slab
    page.wait_for_function("window.viewer.stats.frames > 0")
    series = Series.objects.get(description="E2E chest")
    job = DenoiseJob.objects.get(series=series)
    assert job.status == DenoiseJob.Status.SUCCEEDED
    shot("viewer-side-by-side")

    z = page.evaluate("window.viewer.state.index.axial")
    assert z == SHAPE[0] // 2
    residual = np.asarray(load_array(job.residual_file)[z], dtype=np.float64)
    scale = page.evaluate("window.viewer.vol.res.scale")
    expected = max(3 * np.sqrt(np.mean(residual**2)), 10 * scale)
    assert expected > 20 * scale  # a window from missing data (zeros) would be 10x
    assert page.evaluate("window.viewer.state.residualWindow") == pytest.approx(
        expected, rel=0.02
    )
    page.fill("#rw", "25")
    page.dispatch_event("#rw", "change")
    assert page.evaluate("window.viewer.state.residualWindow") == 25
    assert page.locator("#colorbar .cb-max").text_content() == "+25.0 HU"

    # A trackpad's small wheel deltas add up (50 px a slice); a notch is one slice.
    page.locator(".pane[data-pane=original] canvas").hover()
    for _ in range(10):
        page.mouse.wheel(0, 4)
    page.wait_for_timeout(200)
    assert page.evaluate("window.viewer.state.index.axial") == z
    for _ in range(3):
        page.mouse.wheel(0, 4)
    page.wait_for_function(f"window.viewer.state.index.axial === {z + 1}")
    page.mouse.wheel(0, 100)
    page.wait_for_function(f"window.viewer.state.index.axial === {z + 2}")
    # Arrow keys mean the same on the focused slice slider (up: previous slice).
    page.focus("#slice")
    page.keyboard.press("ArrowUp")
    page.wait_for_function(f"window.viewer.state.index.axial === {z + 1}")
    page.keyboard.press("ArrowDown")
    page.wait_for_function(f"window.viewer.state.index.axial === {z + 2}")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    page.wait_for_function(f"window.viewer.state.index.axial === {z}")

    # Invert flips the greyscale of the image panes; cine plays and stops.
    # The centre pixel after the next two frames (renders are scheduled per frame).
    centre = (
        "async () => { await new Promise((r) => requestAnimationFrame(() =>"
        " requestAnimationFrame(r)));"
        " const c = document.querySelector('.pane[data-pane=original] canvas');"
        " return c.getContext('2d').getImageData(c.width >> 1, c.height >> 1, 1, 1)"
        ".data[0]; }"
    )
    before = page.evaluate(centre)
    page.keyboard.press("i")
    assert page.evaluate("window.viewer.state.invert") is True
    assert abs(page.evaluate(centre) - (255 - before)) <= 1
    page.keyboard.press("i")
    page.fill("#fps", "20")
    page.click("#cine")
    page.wait_for_function(f"window.viewer.state.index.axial !== {z}")
    page.wait_for_timeout(300)
    page.click("#cine")
    stopped = page.evaluate("window.viewer.state.index.axial")
    page.wait_for_timeout(300)
    assert page.evaluate("window.viewer.state.index.axial") == stopped
    page.keyboard.press("Home")
    for _ in range(z):
        page.keyboard.press("ArrowDown")
    page.wait_for_function(f"window.viewer.state.index.axial === {z}")

    page.locator(".pane[data-pane=original] canvas").hover()
    assert "HU" in page.locator(".pane[data-pane=original] .readout").inner_text()
    assert "HU" in page.locator(".pane[data-pane=residual] .readout").inner_text()

    # The scan's own window comes first and is the one shown at first.
    presets = page.locator("#presets button:visible").all_inner_texts()
    assert presets[:2] == ["ABDOMEN", "WIDE"] and "Lung" in presets
    assert page.evaluate("[window.viewer.state.ww, window.viewer.state.wc]") == [
        350,
        50,
    ]
    page.click("[data-preset=lung]")
    assert page.evaluate("[window.viewer.state.ww, window.viewer.state.wc]") == [
        1500,
        -600,
    ]
    shot("viewer-lung-preset")
    page.click("[data-preset=soft]")

    page.click("[data-mode=swipe]")
    page.eval_on_selector(
        "#swipe", "el => { el.value = '0.3'; el.dispatchEvent(new Event('input')); }"
    )
    assert page.evaluate("window.viewer.state.swipe") == pytest.approx(0.3)
    shot("viewer-swipe")

    page.click("[data-mode=flicker]")
    before = page.get_attribute("#viewer", "data-flicker")
    page.keyboard.press("f")
    assert page.get_attribute("#viewer", "data-flicker") != before
    shot("viewer-flicker")

    page.click("[data-mode=overlay]")
    assert page.locator("#colorbar").is_visible()
    shot("viewer-overlay")

    page.click("[data-mode=side]")
    page.keyboard.press("+")
    page.keyboard.press("c")
    page.wait_for_function("window.viewer.state.plane === 'coronal'")
    assert page.evaluate("window.viewer.state.zoom") == pytest.approx(1.25)
    shot("viewer-coronal")
    page.keyboard.press("z")
    page.keyboard.press("x")
    assert page.evaluate("window.viewer.state.zoom") == 1

    page.keyboard.press("r")
    box = page.locator(".pane[data-pane=original] canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.40)
    page.mouse.down()
    page.mouse.move(
        box["x"] + box["width"] * 0.60, box["y"] + box["height"] * 0.62, steps=5
    )
    page.mouse.up()
    page.wait_for_selector("#roi-stats:not([hidden])")
    roi = page.evaluate("window.viewer.roiStats")
    shot("viewer-roi")
    assert roi["plane"] == "axial" and roi["kind"] == "rect" and roi["n"] > 50
    z, rows, cols = (
        roi["index"],
        slice(roi["r0"], roi["r1"]),
        slice(roi["c0"], roi["c1"]),
    )
    original = np.asarray(
        load_array(series.volume_file)[z, rows, cols], dtype=np.float64
    )
    denoised = np.asarray(
        load_array(job.reconstruction_file)[z, rows, cols], dtype=np.float64
    )
    assert original.size == roi["n"]
    assert roi["origMean"] == pytest.approx(original.mean(), abs=0.05)
    assert roi["origSd"] == pytest.approx(original.std(), abs=0.05)
    assert roi["denMean"] == pytest.approx(denoised.mean(), abs=0.05)
    assert roi["denSd"] == pytest.approx(denoised.std(), abs=0.05)
    assert roi["sdRatio"] == pytest.approx(denoised.std() / original.std(), abs=1e-3)
    # In mm and HU: the area from the pixel spacing (0.8 mm), extremes, the residual.
    assert roi["areaMm2"] == pytest.approx(original.size * 0.8 * 0.8, rel=1e-6)
    assert roi["widthMm"] == pytest.approx((roi["c1"] - roi["c0"]) * 0.8, rel=1e-6)
    assert roi["origMin"] == pytest.approx(original.min(), abs=0.05)
    assert roi["origMax"] == pytest.approx(original.max(), abs=0.05)
    assert roi["denMax"] == pytest.approx(denoised.max(), abs=0.05)
    residual = original - denoised
    assert roi["resMean"] == pytest.approx(residual.mean(), abs=0.05)
    assert roi["resSd"] == pytest.approx(residual.std(), abs=0.05)
    assert "mm²" in page.locator("[data-k=roi-desc]").inner_text()
    assert (
        page.locator("[data-k=orig-mean]")
        .inner_text()
        .startswith(f"{original.mean():.1f}")
    )

    # A length (D): 40 % of the pane's width across the 96-column slice, in mm.
    page.keyboard.press("d")
    y = box["y"] + box["height"] * 0.5
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, y, steps=4)
    page.mouse.up()
    page.wait_for_selector("#length-out:not([hidden])")
    length = page.evaluate("window.viewer.length")
    columns = page.evaluate(
        "(() => { const l = window.viewer.state.line; return l.c1 - l.c0; })()"
    )
    assert columns > 10 and length["lengthMm"] == pytest.approx(columns * 0.8, rel=1e-6)
    assert "mm" in page.locator("#length-out").inner_text()
    page.keyboard.press("w")

    page.eval_on_selector(
        "#alpha", "el => { el.value = '0.7'; el.dispatchEvent(new Event('input')); }"
    )
    # The tiny test model has no OOD reference, so the job carries a warning and an
    # Accept needs a comment: refused without one, in the page and by the server.
    assert page.locator("#verdict-concerns").is_visible()
    assert "needs a comment" in page.locator("#verdict-concerns").inner_text()
    page.check("input[name=verdict][value=accept]")
    page.click("#verdict-form button[type=submit]")
    page.wait_for_selector("#verdict-message.error")
    assert "needs a comment" in page.locator("#verdict-message").inner_text()
    assert not Review.objects.filter(job=job).exists()
    # The slice label gives the slice's estimated noise, which the model removed.
    assert "noise" in page.locator("#slice-label").inner_text()
    page.fill("textarea[name=comment]", "noise halved, edges kept")
    page.check("#attach-measurements")
    page.click("#verdict-form button[type=submit]")
    page.wait_for_selector("#verdict-message.ok")
    shot("viewer-verdict")
    review = Review.objects.get(job=job)
    assert (review.verdict, review.strength, review.reviewer) == ("accept", 0.7, alice)
    # The ROI and the length went with the verdict, and the review list shows them.
    rect, line = review.measurements
    assert rect["kind"] == "rect" and rect["plane"] == "axial"
    assert rect["origMean"] == pytest.approx(original.mean(), abs=0.06)
    assert line["kind"] == "length"
    assert line["lengthMm"] == pytest.approx(length["lengthMm"], abs=0.01)
    page.wait_for_selector("#reviews .measurement")
    assert "mm" in page.locator("#reviews .measurement").first.inner_text()
    # The form resets; a second verdict is an explicit change, and both are kept.
    assert page.locator("input[name=verdict]:checked").count() == 0
    assert page.input_value("textarea[name=comment]") == ""
    assert page.inner_text("#verdict-submit") == "Change verdict"
    page.check("input[name=verdict][value=needs_review]")
    page.fill("textarea[name=comment]", "=HYPERLINK(1) second look at slice 4")
    page.click("#verdict-submit")
    page.wait_for_selector("#verdict-message.ok:has-text('changed')")
    first, second = Review.objects.filter(job=job).order_by("pk")
    assert (first.verdict, second.verdict) == ("accept", "needs_review")
    page.wait_for_function("document.querySelectorAll('#reviews li').length === 2")

    page.click("#audit-link")
    page.wait_for_selector("#audit tr[data-action=review]")
    change_row, review_row = page.locator("#audit tr[data-action=review]").all()
    assert "replaces.verdict" in change_row.inner_text()
    assert "accept" in change_row.inner_text()
    assert "noise halved, edges kept" in review_row.inner_text()
    # Details read as name/value lines, not JSON.
    details = review_row.locator("dl.kv")
    names = details.locator("dt").all_inner_texts()
    assert {"verdict", "comment", "model", "concerns"} <= set(names)
    assert details.locator("dd").nth(names.index("verdict")).inner_text() == "accept"
    assert "{" not in details.inner_text()
    shot("audit")
    # The CSV export: a cell that starts like a formula (= + - @) stays text.
    with page.expect_download() as download:
        page.click("#csv-export")
    csv_text = download.value.path().read_text()
    assert "=HYPERLINK(1) second look" in csv_text  # inside the extra_data JSON
    cells = page.evaluate(
        "async (cells) =>"
        " cells.map((await import('/static/radiology/csv.js')).csvCell)",
        ["=1+1", "-2", "+3", "@SUM(A1)", "a=b", "x,y"],
    )
    assert cells == ["'=1+1", "'-2", "'+3", "'@SUM(A1)", "a=b", '"x,y"']

    page.goto(f"{base}/")
    page.wait_for_selector("#studies .badge.verdict-needs_review")  # the latest verdict
    shot("studies-verdict")

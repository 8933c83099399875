"""Every page works under the app's strict Content-Security-Policy (no inline script
or style): a violation is a console error, which fails the test."""

from __future__ import annotations

import pytest

from dicomio.synthetic import phantom_volume, write_series
from radiology.middleware import CONTENT_SECURITY_POLICY
from radiology.models import DenoiseJob
from tests.e2e.conftest import sign_in, upload_files

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.strict_csp,
    pytest.mark.django_db(transaction=True),
]


def test_the_pages_run_under_the_content_security_policy(
    live_server, alice, models_root, in_process_worker, browser_page, tmp_path
):
    files = write_series(
        tmp_path / "csp", phantom_volume((6, 48, 48), seed=8), spacing_mm=(2, 1, 1)
    )
    page = browser_page
    base = live_server.url
    response = page.goto(f"{base}/accounts/login/")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    sign_in(page, base)
    page.wait_for_selector("#studies")
    upload_files(page, base, files)
    job = None
    for _ in range(120):
        assert not in_process_worker, in_process_worker
        job = DenoiseJob.objects.first()
        if job and job.status == DenoiseJob.Status.SUCCEEDED:
            break
        page.wait_for_timeout(500)
    page.goto(f"{base}/")
    page.wait_for_selector("#studies tr[data-series-id]")
    page.goto(f"{base}/series/{job.series_id}/")
    page.wait_for_selector("#jobs a")
    page.goto(f"{base}/series/{job.series_id}/view/")
    page.wait_for_selector("#viewer[data-loaded='1']")
    page.goto(f"{base}/jobs/{job.pk}/compare/")
    page.wait_for_selector("#viewer[data-loaded='1']")
    # The flag marks and the canvases drew without inline style or script.
    assert page.evaluate("window.viewer.stats.frames") > 0
    page.goto(f"{base}/audit/")
    page.wait_for_selector("#audit tr[data-action]")
    page.goto(f"{base}/models/")
    page.wait_for_selector("body")
    # JSON carrying patient data is never cached.
    api = page.request.get(f"{base}/api/series/{job.series_id}")
    assert api.headers["cache-control"] == "no-store"

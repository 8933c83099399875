"""Debian's headless Chromium (never a downloaded one) against the live_server."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
import torch

import inference
from bench.viewer import CHROMIUM, CHROMIUM_ARGS, VIEWER_HOOK
from inference.networks import build_network
from tests.conftest import require
from tests.inference.inference_fixtures import REDCNN, metadata

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"


@pytest.fixture
def browser_page(monkeypatch, request):
    """A 1280×800 page; any console error or uncaught exception fails the test.

    Playwright's ``wait_for_function`` evaluates its predicate with ``eval``, which
    the app's Content-Security-Policy forbids, so pages ignore the policy unless
    the test is marked ``strict_csp`` (then a violation is a console error)."""
    require(
        Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt-get install chromium)"
    )
    # Playwright's sync API runs an event loop in this thread; the test still reads the
    # database directly (the ORM refuses that inside a loop unless told it is safe).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        strict = request.node.get_closest_marker("strict_csp") is not None
        context = browser.new_context(
            viewport={"width": 1280, "height": 800}, bypass_csp=not strict
        )
        context.add_init_script(VIEWER_HOOK)
        page = context.new_page()
        page.on(
            "console",
            lambda msg: (
                errors.append(f"console: {msg.text} @ {msg.location}")
                if msg.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        page.set_default_timeout(20_000)
        page.console_errors = errors
        try:
            yield page
        finally:
            context.close()
            browser.close()
    assert not errors, "JavaScript console errors:\n" + "\n".join(errors)


@pytest.fixture
def shot(browser_page):
    """Save a full-page screenshot under test-artifacts/e2e/NN-name.png."""
    counter = iter(range(1, 100))

    def take(name: str) -> Path:
        path = ARTIFACTS / f"{next(counter):02d}-{name}.png"
        browser_page.screenshot(path=str(path))
        return path

    return take


@pytest.fixture
def in_process_worker(live_server):
    """Plays the Celery worker inside the test process.

    The live server's in-memory SQLite database cannot be reached from a separate
    worker process, so this thread claims queued jobs and runs them through the same
    service the Celery task calls (``denoise_job_run``) on the live server's shared
    connection. Real worker processes are covered by tests/integration. Messages the
    request publishes go to an in-memory broker that nothing else reads.
    """
    from django.db import OperationalError, connections

    from radiology.celery import app
    from radiology.models import DenoiseJob
    from radiology.services.jobs import TransientJobError, denoise_job_run

    previous_broker = app.conf.broker_url
    app.conf.broker_url = "memory://"
    shared = connections["default"]
    shared.inc_thread_sharing()
    stop = threading.Event()
    failures: list[BaseException] = []
    transient = [0]

    def loop() -> None:
        connections["default"] = shared
        while not stop.is_set():
            try:
                queued = list(
                    DenoiseJob.objects.filter(
                        status=DenoiseJob.Status.QUEUED
                    ).values_list("pk", flat=True)
                )
                for pk in queued:
                    denoise_job_run(job_id=pk, worker="e2e-in-process")
            except (OperationalError, TransientJobError):
                # The live server's thread shares this SQLite connection: a table
                # it is writing is briefly locked. Celery retries such errors; so
                # does this stand-in, and a job released for retry is queued again.
                transient[0] += 1
                if transient[0] > 50:
                    failures.append(RuntimeError("database locked 50 times"))
                    return
            except BaseException as exc:  # surfaced by the test, not lost in the thread
                failures.append(exc)
                return
            stop.wait(0.3)

    thread = threading.Thread(target=loop, name="e2e-worker", daemon=True)
    thread.start()
    try:
        yield failures
    finally:
        stop.set()
        thread.join(timeout=30)
        shared.dec_thread_sharing()
        app.conf.broker_url = previous_broker


@pytest.fixture
def models_root(settings, tmp_path):
    """A tiny real bundle whose output differs a little from its input."""
    network = build_network(REDCNN)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in network.decoder[-1].parameters():
            parameter.mul_(0.02)
    root = tmp_path / "models"
    inference.write_bundle(
        root / "tiny" / "1.0.0",
        metadata=metadata("tiny", "1.0.0"),
        state_dict=network,
        model_card="# tiny\n\nUntrained test bundle.\n",
    )
    (root / "DEFAULT").write_text("tiny\n")
    settings.MODELS_ROOT = root
    settings.DENOISE_DEFAULT_MODEL = ""
    inference.clear_cache()
    return root


def patch_script(page, path: str, old: str, new: str) -> None:
    """Serve the static script ending in ``path`` with ``old`` replaced by ``new``:
    the browser's monkeypatch of the page's code. A script without ``old`` is
    answered 500, so the page reports a console error instead of running unpatched."""

    def handle(route) -> None:
        response = route.fetch()
        body = response.text()
        if old not in body:
            route.fulfill(status=500, body=f"{old!r} is not in {path}")
        else:
            route.fulfill(response=response, body=body.replace(old, new))

    page.route(re.compile(re.escape(path) + r"(\?.*)?$"), handle)


def sign_in(page, base: str) -> None:
    """Sign in as the ``alice`` fixture's reviewer and land on the study list."""
    page.goto(f"{base}/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "review-pass-123")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def upload_files(page, base: str, files) -> None:
    """Upload files on the upload page and wait for the created series' badges."""
    page.goto(f"{base}/upload/")
    page.set_input_files("#file-input", [str(p) for p in files])
    page.wait_for_selector(".series-created li .badge")

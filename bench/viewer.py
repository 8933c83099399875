"""Viewer speed in a real browser: time to first image, scroll and W/L frame rates.

``python -m bench viewer --json`` builds a throw-away site under a temporary folder
(SQLite, media), stores a 300×512×512 CT series and a finished job for it, serves the
app on localhost and drives Debian's headless Chromium with Playwright. The job's
outputs are written directly (a smoothed copy of the volume and its residual): this
benchmark measures the viewer, not the denoiser, and running a network on 78 M voxels
on a shared CPU would only make it slow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["main"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
PASSWORD = "bench-viewer-pass-1"

#: Measurement-only access to the compare viewer (tests/e2e uses it too): production
#: code sets no globals, so once the page's modules have run this imports the page's
#: own viewer module (the same instance, not a second viewer) and puts its exported
#: state on ``window.viewer``.
VIEWER_HOOK = """
document.addEventListener("DOMContentLoaded", () => {
  const main = document.querySelector('script[type=module][src$="/viewer/main.js"]');
  if (main) import(main.src).then((module) => { window.viewer = module.viewer; });
});
"""

_SCROLL_JS = """async (frames) => {
  const canvas = document.querySelector('.pane[data-pane=original] canvas');
  const next = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
  await next();
  const start = performance.now();
  const before = window.viewer.stats.frames;
  const depth = window.viewer.vol.shape[0];
  let down = true;
  for (let i = 0; i < frames; i++) {
    const at = window.viewer.state.index.axial;
    if (at >= depth - 1) down = false;
    if (at <= 0) down = true;
    canvas.dispatchEvent(new WheelEvent('wheel',
      {deltaY: down ? 100 : -100, bubbles: true, cancelable: true}));
    await next();
  }
  await next();
  const rendered = window.viewer.stats.frames - before;
  return rendered / ((performance.now() - start) / 1000);
}"""

_WINDOW_JS = """async (frames) => {
  const canvas = document.querySelector('.pane[data-pane=original] canvas');
  const r = canvas.getBoundingClientRect();
  const at = (type, dx, dy) => canvas.dispatchEvent(new PointerEvent(type, {
    clientX: r.left + r.width / 2 + dx, clientY: r.top + r.height / 2 + dy,
    pointerId: 1, button: 0, buttons: 1, bubbles: true, cancelable: true,
    isPrimary: true}));
  const next = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
  at('pointerdown', 0, 0);
  await next();
  const start = performance.now();
  const before = window.viewer.stats.frames;
  for (let i = 1; i <= frames; i++) {
    at('pointermove', (i % 80) - 40, (i % 60) - 30);
    await next();
  }
  await next();
  const rendered = window.viewer.stats.frames - before;
  at('pointerup', 0, 0);
  return rendered / ((performance.now() - start) / 1000);
}"""


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench viewer", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    parser.add_argument(
        "--shape", default="300,512,512", help="series size z,y,x (default 300,512,512)"
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=120,
        help="frames per rate measurement (default 120)",
    )
    return parser.parse_args(argv)


def _setup_django(workdir: Path) -> None:
    os.environ.setdefault("DEBUG", "1")
    os.environ["VAR_DIR"] = str(workdir)
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ["MEDIA_ROOT"] = str(workdir / "media")
    os.environ["DJANGO_SETTINGS_MODULE"] = "radiology.settings"
    # Playwright's sync API keeps an event loop in this thread; the ORM calls made
    # while it runs are plain synchronous ones.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _make_job(shape: tuple[int, int, int]):
    """A user, a CT series of ``shape`` and a succeeded job with stored outputs."""
    import numpy as np
    from django.contrib.auth import get_user_model

    from dicomio.synthetic import phantom_volume
    from radiology.models import DenoiseJob, Series, Study
    from radiology.storage import generated_name, store_array

    user = get_user_model().objects.create_user("bench", password=PASSWORD)
    volume = phantom_volume(shape, seed=1)
    smooth = volume.copy()
    smooth[:, 1:-1, 1:-1] = (
        volume[:, 1:-1, 1:-1] * 4
        + volume[:, :-2, 1:-1]
        + volume[:, 2:, 1:-1]
        + volume[:, 1:-1, :-2]
        + volume[:, 1:-1, 2:]
    ) / 8
    residual = (volume - smooth).astype(np.float32)
    names = [generated_name(kind, ".npy") for kind in ("volumes", "outputs", "outputs")]
    arrays = (volume, smooth, residual)
    shas = [store_array(n, a) for n, a in zip(names, arrays, strict=True)]
    study = Study.objects.create(study_instance_uid="1.2.3.bench", owner=user)
    series = Series.objects.create(
        study=study,
        series_instance_uid="1.2.3.bench.1",
        modality="CT",
        description="bench viewer",
        shape=list(shape),
        spacing_mm=[1.0, 0.7, 0.7],
        instance_count=shape[0],
        volume_file=names[0],
        volume_sha256=shas[0],
    )
    return DenoiseJob.objects.create(
        series=series,
        model_name="bench",
        model_version="0.0.0",
        weights_sha256="0" * 64,
        params_sha256="0" * 64,
        input_sha256=series.volume_sha256,
        status=DenoiseJob.Status.SUCCEEDED,
        progress=1.0,
        reconstruction_file=names[1],
        reconstruction_sha256=shas[1],
        residual_file=names[2],
        residual_sha256=shas[2],
        metrics={"flagged_slices": []},
        requested_by=user,
    )


def _serve():
    """The app with static files on an ephemeral localhost port, in a daemon thread."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadedWSGIServer(
        ("127.0.0.1", 0), QuietHandler, allow_reuse_address=False
    )
    server.set_app(StaticFilesHandler(get_wsgi_application()))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str]) -> int:
    args = _parse(argv)
    try:
        shape = tuple(int(v) for v in args.shape.split(","))
        if len(shape) != 3 or min(shape) <= 0:
            raise ValueError
    except ValueError:
        print(f"bench viewer: --shape must be z,y,x positive sizes, got {args.shape!r}")
        return 2
    if not Path(CHROMIUM).exists():
        print(f"bench viewer: {CHROMIUM} is missing (apt-get install chromium)")
        return 2
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as tmp:
        _setup_django(Path(tmp))
        job = _make_job(shape)  # type: ignore[arg-type]
        server = _serve()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            result = _measure(base, job.pk, args.frames)
        finally:
            server.shutdown()
            server.server_close()
    result.update({"shape": list(shape), "frames": args.frames, "browser": CHROMIUM})
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>18}: {value}")
    return 0


def _measure(base: str, job_id: int, frames: int) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        try:
            # wait_for_function evaluates its predicate with eval, which the app's
            # Content-Security-Policy forbids; the policy costs nothing to measure.
            context = browser.new_context(
                viewport={"width": 1280, "height": 800}, bypass_csp=True
            )
            context.add_init_script(VIEWER_HOOK)
            page = context.new_page()
            page.set_default_timeout(120_000)
            page.goto(f"{base}/accounts/login/")
            page.fill("#id_username", "bench")
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            page.goto(f"{base}/jobs/{job_id}/compare/", wait_until="commit")
            page.wait_for_function(
                "window.viewer && window.viewer.stats"
                " && window.viewer.stats.firstImageMs !== null"
            )
            first_image_s = page.evaluate("window.viewer.stats.firstImageMs") / 1000
            started = time.perf_counter()
            page.wait_for_selector("#viewer[data-loaded='1']", state="attached")
            all_loaded_s = first_image_s + time.perf_counter() - started
            scroll_fps = page.evaluate(_SCROLL_JS, frames)
            window_level_fps = page.evaluate(_WINDOW_JS, frames)
            frame_ms = page.evaluate("window.viewer.stats.lastFrameMs")
        finally:
            browser.close()
    return {
        "first_image_s": round(first_image_s, 3),
        "scroll_fps": round(scroll_fps, 1),
        "window_level_fps": round(window_level_fps, 1),
        "all_slices_loaded_s": round(all_loaded_s, 2),
        "last_render_ms": round(frame_ms, 2),
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The pages' scripts: Node's unit tests of the viewer's pure modules, imports that
resolve, and no global test hooks in production code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "radiology" / "static"
JS_TESTS = sorted((ROOT / "tests" / "js").glob("*.test.mjs"))

#: An assignment to a property of the page's global object (``window.x = …``,
#: ``globalThis["x"] = …``), but not a comparison.
GLOBAL_ASSIGNMENT = re.compile(
    r"\b(?:window|globalThis|self)\s*(?:\.\s*[\w$]+|\[[^\]]*\])\s*=(?!=)"
)
#: A static or dynamic import of a relative module path.
RELATIVE_IMPORT = re.compile(
    r"""(?:\bfrom\s*|\bimport\s*\(?\s*)["'](\.\.?/[^"']+)["']"""
)


def production_scripts() -> list[Path]:
    return sorted(STATIC.rglob("*.js"))


def test_node_runs_the_viewer_unit_tests():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing (apt-get install nodejs): tests/js cannot run")
    assert JS_TESTS, "no tests/js/*.test.mjs found"
    # Files rather than the folder: Node 18 and 20 take a folder, later ones globs.
    result = subprocess.run(
        [node, "--test", *map(str, JS_TESTS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.search(r"^# fail 0$", result.stdout, re.M), result.stdout[-2000:]


@pytest.mark.parametrize(
    ("line", "hook"),
    [
        ("window.viewer = viewerApi;", True),
        ("window['audit'] = { csvCell };", True),
        ("globalThis.x=1", True),
        ("if (window.viewer === undefined) {}", False),
        ("const bytes = window.devicePixelRatio * 2;", False),
        ("window.addEventListener('load', start);", False),
    ],
)
def test_global_assignment_pattern(line, hook):
    assert bool(GLOBAL_ASSIGNMENT.search(line)) is hook


def test_no_production_script_sets_a_global():
    """Test hooks reach the viewer through its module's exports (tests/e2e), never
    through globals that production pages would carry."""
    scripts = production_scripts()
    assert scripts
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in scripts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if GLOBAL_ASSIGNMENT.search(line)
    ]
    assert not found, "\n".join(found)


def test_every_relative_import_names_a_static_file():
    missing = [
        f"{path.relative_to(ROOT)} imports {target}"
        for path in production_scripts()
        for target in RELATIVE_IMPORT.findall(path.read_text())
        if not (path.parent / target).resolve().is_file()
    ]
    assert not missing, "\n".join(missing)


def test_every_script_a_template_loads_is_a_static_file():
    templates = sorted((ROOT / "radiology" / "templates").rglob("*.html"))
    loaded = {
        (template.name, src)
        for template in templates
        for src in re.findall(
            r"""{%\s*static\s+['"]([^'"]+\.js)['"]\s*%}""", template.read_text()
        )
    }
    assert ("compare.html", "radiology/viewer/main.js") in loaded
    missing = [
        f"{name} loads {src}" for name, src in loaded if not (STATIC / src).is_file()
    ]
    assert not missing, "\n".join(missing)

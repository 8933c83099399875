"""The training command line: help, and one-line errors on bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from training.cli import main


def test_help_lists_the_commands():
    result = subprocess.run(
        [sys.executable, "-m", "training", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    for command in ("train", "evaluate", "export"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nnetwork: {kind: nope}\nbogus: 1\n", "unknown key 'bogus'"),
        ("network: {kind: redcnn}\n", "name is required"),
        ("name: x\nnetwork: {kind: redcnn}\ntrain: {mode: magic}\n", "train.mode"),
        ("name: [unclosed\n", "does not parse"),
    ],
)
def test_bad_config_exits_1_with_a_reason(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["train", "--config", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_missing_config_file_exits_1(tmp_path, capsys):
    assert main(["evaluate", "--config", str(tmp_path / "none.yaml")]) == 1
    assert "none.yaml" in capsys.readouterr().err


def test_shipped_configs_are_valid():
    from pathlib import Path

    from training.config import load_config

    configs = sorted(Path("training/configs").glob("*.yaml"))
    assert len(configs) >= 6
    for path in configs:
        load_config(path)


def test_shipped_configs_fine_tune_bundles_that_exist():
    from pathlib import Path

    from inference.bundle import read_metadata
    from training.config import load_config

    parents = [
        load_config(path)["train"]["init_from"]
        for path in sorted(Path("training/configs").glob("*.yaml"))
    ]
    parents = [Path(p) for p in parents if p]
    assert parents
    for parent in parents:
        meta = read_metadata(parent)
        assert parent == Path("models") / meta["name"] / meta["version"]


def test_training_never_imports_django_or_the_app():
    code = (
        "import sys, training.cli, training.trainer, training.export,"
        " training.evaluate;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'radiology')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr

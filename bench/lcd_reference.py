"""Our LG-CHO against the FDA LCD-CT tool on the tool's own sample images.

``python -m bench lcd_reference --tool DIR [--json]``, DIR being a copy of the tool
(its ``src`` and ``data/small_dataset``; the project keeps one in
``../shared/reference/lcd-ct``). Both observers see identical ROIs and identical
train/test splits; the tool runs in a Python that has its requirements (pandas,
scikit-learn), given by ``--python`` (default: this one). Writes
``bench/results/lcd_observer_check.{json,md}``. The tool is a reference to check
numbers against, never a dependency of the app.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench._observer import cho_auc, insert_rois, roi_size

RESULTS = Path(__file__).parent / "results"
_DOSES = ("dose_010", "dose_055", "dose_100")
_INSERTS_HU = (14, 7, 5, 3)


def _load(folder: Path) -> np.ndarray:
    files = sorted(folder.glob("*.raw"))
    return (
        np.stack(
            [np.fromfile(f, dtype=np.int16).reshape(256, 256) for f in files]
        ).astype(np.float32)
        - 1000.0
    )


def _masks(truth: np.ndarray) -> list[np.ndarray]:
    from scipy import ndimage

    masks = []
    for hu in _INSERTS_HU:
        near = ndimage.median_filter(np.abs(truth - hu) < 1, size=3)
        labels, count = ndimage.label(near)
        sizes = ndimage.sum(near, labels, range(1, count + 1))
        masks.append(labels == 1 + int(np.argmax(sizes)))
    return masks


_TOOL_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from lcdct.Observers import LG_CHO
data = np.load(sys.argv[2])
out = {}
for key in data.files:
    if not key.endswith("_sp"):
        continue
    name = key[:-3]
    sp, sa = data[name + "_sp"], data[name + "_sa"]
    width = float(data[name + "_width"])
    rng = np.random.default_rng(0)
    aucs = []
    for reader in range(10):
        p, a = rng.permutation(len(sp)), rng.permutation(len(sa))
        h = len(sp) // 2
        obs = LG_CHO(sp, sa, channel_width=width)
        res = obs.calculate_metrics(
            obs.signal_absent[a[:h]], obs.signal_present[p[:h]],
            obs.signal_absent[a[h:]], obs.signal_present[p[h:]])
        aucs.append(float(res["auc"]))
    out[name] = aucs
print(json.dumps(out))
"""


def run(tool: Path, python: str) -> dict:
    base = tool / "data" / "small_dataset" / "fbp"
    truth = np.fromfile(base / "ground_truth.raw", dtype=np.uint16).reshape(256, 256)
    masks = _masks(truth.astype(np.float32) - 1000.0)
    diameters = [float(np.sqrt(m.sum() * 4 / np.pi)) for m in masks]
    size = roi_size(diameters)
    arrays = {}
    for dose in _DOSES:
        present = _load(base / dose / "signal_present")
        absent = _load(base / dose / "signal_absent")
        for hu, mask, diameter in zip(_INSERTS_HU, masks, diameters, strict=True):
            name = f"{dose}_{hu}HU"
            arrays[name + "_sp"] = insert_rois(present, mask, size)
            arrays[name + "_sa"] = insert_rois(absent, mask, size)
            arrays[name + "_width"] = np.array(2 / 3 * diameter)
    npz = RESULTS / "lcd_observer_check.tmp.npz"
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.savez(npz, **arrays)
    try:
        done = subprocess.run(
            [python, "-c", _TOOL_SCRIPT, str(tool / "src"), str(npz)],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        npz.unlink()
    if done.returncode:
        raise SystemExit(f"lcd_reference: the tool failed: {done.stderr[-1500:]}")
    theirs = json.loads(done.stdout)
    rows = []
    for name, tool_aucs in theirs.items():
        ours, _ = cho_auc(
            arrays[name + "_sp"],
            arrays[name + "_sa"],
            float(arrays[name + "_width"]),
            readers=10,
            seed=0,
        )
        rows.append(
            {
                "case": name,
                "auc_ours": round(ours, 4),
                "auc_tool": round(float(np.mean(tool_aucs)), 4),
            }
        )
    worst = max(abs(r["auc_ours"] - r["auc_tool"]) for r in rows)
    return {"benchmark": "lcd_reference", "rows": rows, "max_abs_difference": worst}


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench lcd_reference", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--tool", type=Path, required=True, help="copy of the LCD-CT tool"
    )
    parser.add_argument(
        "--python", default=sys.executable, help="a Python with the tool's requirements"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(list(argv))
    report = run(args.tool, args.python)
    (RESULTS / "lcd_observer_check.json").write_text(json.dumps(report, indent=2))
    lines = [
        "# LG-CHO: ours against the FDA LCD-CT tool",
        "",
        "Identical ROIs (4x the largest insert, centred on each), identical channel "
        "width (2/3 of the insert diameter, 5 LG channels) and identical train/test "
        "splits (10 readers, half/half) on the tool's 10+10 sample images per dose.",
        "",
        "| case | AUC ours | AUC tool |",
        "|---|---|---|",
    ]
    lines += [
        f"| {r['case']} | {r['auc_ours']:.4f} | {r['auc_tool']:.4f} |"
        for r in report["rows"]
    ]
    lines += ["", f"Largest difference: {report['max_abs_difference']:.2e}", ""]
    (RESULTS / "lcd_observer_check.md").write_text("\n".join(lines))
    print(json.dumps(report) if args.json else "\n".join(lines))
    return 0

"""The speed benchmark's own parts: the memmap child and goals for partial runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import speed


def test_memmap_child_denoises_into_memmaps_and_measures_memory(
    tmp_path: Path,
) -> None:
    row = speed._child_memmap(
        {"tmp": str(tmp_path), "depth": 6, "size": 64, "threads": 1, "device": "cpu"}
    )
    assert row["shape"] == [6, 64, 64] and row["outputs_are_memmaps"]
    assert row["seconds"] > 0 and row["anon_peak_mb"] > 0
    assert {"anon_growth_mb", "rss_growth_mb", "precision"} <= row.keys()


def _memmap_rows(growths: tuple[float, ...]) -> list[dict]:
    return [
        {
            "shape": [depth, 1024, 1024],
            "float32_volume_mb": depth * 4.0,
            "anon_growth_mb": grow,
            "rss_growth_mb": grow,
        }
        for depth, grow in zip((64, 128, 256), growths, strict=False)
    ]


def _report(parts: list[str], device: str = "cpu") -> dict:
    memmap = _memmap_rows((300.0, 310.0))
    report = {
        "device": device,
        "shape": [300, 512, 512],
        "float32_volume_mb": 300.0,
        "parts": parts,
        "e2e": {
            "e2e_s": 1.5,
            "precision": "bf16",
            "peak_rss_mb": 1400.0,
            "baseline_rss_mb": 600.0,
            "peak_anon_mb": 900.0,
            "baseline_anon_mb": 400.0,
        },
        "variants": {},
        "memmap": memmap if "memmap" in parts else [],
        "bm3d": {"volume_s_extrapolated": 900.0} if "bm3d" in parts else {},
    }
    report["summary"] = speed._summary(report, 300)
    return report


def test_goals_cover_only_the_parts_that_ran() -> None:
    goals = speed._goals(_report(["e2e"]))
    assert goals["e2e_le_15_s"] and goals["peak_rss_growth_le_3x_volume"]
    assert (
        "speedup_vs_bm3d_ge_100" not in goals
        and "memmap_anon_flat_in_depth" not in goals
    )
    full = speed._goals(_report(["e2e", "memmap", "bm3d"]))
    assert full["speedup_vs_bm3d_ge_100"] and full["memmap_anon_flat_in_depth"]


def test_gpu_runs_are_held_to_two_seconds() -> None:
    goals = speed._goals(_report(["e2e"], device="cuda"))
    assert goals == {
        "measured_at_issue_size": True,
        "e2e_le_2_s": True,
        "peak_rss_growth_le_3x_volume": True,
        "peak_rss_le_3x_volume": False,
    }


@pytest.mark.parametrize(
    ("growths", "flat"),
    [
        ((480.0, 594.0, 489.0), True),  # run-to-run noise of the heaps
        ((300.0, 500.0, 700.0), False),  # grows with the depth
        ((300.0, 310.0, 520.0), False),  # the deepest run says so
    ],
)
def test_memmap_memory_is_judged_deepest_against_shallowest(
    growths: tuple[float, ...], flat: bool
) -> None:
    report = _report(["memmap"])
    report["memmap"] = list(reversed(_memmap_rows(growths)))  # any order
    goals = speed._goals(report)
    assert goals["memmap_anon_flat_in_depth"] is flat
    assert goals["memmap_rss_flat_in_depth"] is flat

"""``python -m bench padding`` times MONAI's pad and the fallback on equal outputs."""

from __future__ import annotations

import json

from bench import padding


def test_padding_benchmark_reports_each_way_for_each_shape(capsys) -> None:
    assert padding.main(["--repeats", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["shape"] for row in report["rows"]] == [
        list(shape) for shape in padding.SHAPES
    ]
    for row in report["rows"]:
        assert row["monai_pad_ms"] > 0 and row["gather_ms"] > 0 and row["np_pad_ms"] > 0

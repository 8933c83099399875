"""Folders on disk are read as uploads are: training and the benchmarks use these."""

from __future__ import annotations

import numpy as np
import pytest

import dicomio
from dicomio.synthetic import write_series


def test_read_series_takes_the_largest_series_in_position_order(tmp_path):
    volume = np.stack([np.full((16, 16), 10.0 * k) for k in range(5)])
    write_series(tmp_path / "big", volume, origin=(0, 0, 20))
    write_series(tmp_path / "small", volume[:2] + 300)
    series = dicomio.read_series(tmp_path, "CT")
    assert series.shape[0] == 5
    assert [float(frame.mean()) for frame in series.frames] == [
        10.0 * k for k in range(5)
    ]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda root: root / "absent", "not a directory"),
        (lambda root: root, "no readable MR slices"),
    ],
)
def test_read_series_names_the_folder_and_why_it_has_no_series(tmp_path, make, reason):
    write_series(tmp_path / "ct", np.zeros((3, 16, 16)))
    with pytest.raises(dicomio.DicomRejected, match=reason) as caught:
        dicomio.read_series(make(tmp_path), "MR")
    assert caught.value.name == str(make(tmp_path))

"""``python -m bench audit`` needs PostgreSQL and says so (the run itself is measured
on a real server; see bench/results/audit.md)."""

from __future__ import annotations

import pytest

from bench import audit


@pytest.mark.parametrize("url", ["", "sqlite:///db.sqlite3"])
def test_refuses_a_database_without_row_locks(url, capsys):
    with pytest.raises(SystemExit) as info:
        audit.main(["--database-url", url])
    assert info.value.code == 2
    assert "needs --database-url postgres://" in capsys.readouterr().err

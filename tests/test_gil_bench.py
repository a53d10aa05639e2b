"""`python -m bench.gil` end to end: a compiled batch timed alone and beside busy threads, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(400)
def test_gil_bench_times_every_interval_and_neighbour(tmp_path: Path) -> None:
    out = tmp_path / "gil.json"
    command = [sys.executable, "-m", "bench.gil", "--seconds", "0.2", "--precision", "fp32", "--json", str(out)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=380, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    table = json.loads(out.read_text())["ms_per_batch"]
    assert list(table) == ["5 ms", "1 ms", "0.5 ms", "0.2 ms"]
    for row in table.values():
        assert set(row) == {"alone", "2 redis threads", "1 spinning thread"}
        assert all(cell["batches"] > 0 and cell["p90"] >= cell["p50"] > 0 for cell in row.values())
    assert "switch    5 ms  alone:" in run.stdout  # the summary table

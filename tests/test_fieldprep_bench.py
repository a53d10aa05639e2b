"""`python -m bench.fieldprep` end to end, in a subprocess: both parts of a field's time, and
preparation in a real pool reading exactly as in the model's thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
def test_fieldprep_bench_times_both_parts_and_pooled_preparation(tmp_path: Path, mnist_root: Path) -> None:
    out = tmp_path / "fieldprep.json"
    command = [sys.executable, "-m", "bench.fieldprep", "--model", "untrained", "--count", "12", "--batch", "6"]
    command += ["--pools", "1", "--no-compile", "--json", str(out)]
    env = os.environ | {"INKQ_DATA_ROOT": str(mnist_root)}
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=220, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["fields"] == 12 and figures["errors"] == 0 and figures["pooled_same_as_inline"]
    assert figures["prepare_ms_per_field"] > 0 and figures["networks_ms_per_field"] > 0
    assert set(figures["prepared_fields_per_second_by_processes"]) == {"0", "1"}
    ceiling = figures["model_thread_fields_per_second"]
    assert ceiling["networks only"] > ceiling["preparing too"] > 0
    assert "fields prepared by pool size" in run.stdout

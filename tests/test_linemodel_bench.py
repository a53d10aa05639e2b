"""`python -m bench.linemodel` in a subprocess: the line reader timed in every way it could be served,
each checked against eager fp32's readings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(400)
def test_linemodel_bench_times_eager_compiled_and_int8_line_readers(tmp_path: Path, mnist_root: Path) -> None:
    out = tmp_path / "linemodel.json"
    command = [sys.executable, "-m", "bench.linemodel", "--model", "untrained", "--batch", "4", "--repeats", "1"]
    env = os.environ | {"INKQ_DATA_ROOT": str(mnist_root), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    run = subprocess.run(
        [*command, "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=380, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(out.read_text())
    names = {"eager_fp32", "eager_fp32_channels_last", "compiled_fp32", "compiled_int8", "served_int8"}
    assert names <= set(figures["ms_per_line"]) and figures["batch"] == 4 and figures["width"] % 32 == 0
    assert all(ms > 0 for ms in figures["ms_per_line"].values())
    # The same network in another layout, or compiled, reads the same lines the same way.
    assert (
        figures["same_reading"]["eager_fp32_channels_last"] == 1.0 and figures["same_reading"]["compiled_fp32"] == 1.0
    )
    assert (
        0.0 <= figures["same_reading"]["compiled_int8"] <= 1.0 and 0.0 <= figures["same_reading"]["served_int8"] <= 1.0
    )
    assert figures["speedup_over_served_fp32"]["eager_fp32_channels_last"] == 1.0
    assert "compiled_int8" in run.stdout

"""The benchmark's smoke run, so that it cannot rot. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.submit import measure
from tests.conftest import ROOT, MnistArrays, write_digits

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(900)
def test_quick_benchmark_writes_every_figure(
    env: dict[str, str], published: str, mnist_root: Path, tmp_path: Path
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path), "--data-root", str(mnist_root)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads((tmp_path / "latest.json").read_text())
    for key in (
        "model_only",
        "textbook_recipe",
        "e2e",
        "fields_e2e",
        "naive",
        "latency_ms",
        "worker_start_s",
        "retrain_s",
        "machine",
    ):
        assert key in result, key
    assert set(result["model_only"]) >= {"eager_fp32", "compiled_fp32"}
    assert result["e2e"]["images"] == 200 and not result["e2e"]["missing_or_duplicated"]
    assert result["e2e"]["errors"] == 0
    assert result["naive"]["images"] == 40
    assert set(result["e2e_by_preprocess_workers"]) == {"0", "1", "2"}
    assert min(result["e2e_by_preprocess_workers"].values()) > 0
    assert set(result["latency_ms"]) == {"p50", "p95", "p99"}
    for name, run in result["latency_runs"].items():  # every job's end was seen, and by which engine
        assert run["missing"] == 0 and run["n"] > 0 and run["engine"], name
    assert (tmp_path / "throughput.png").stat().st_size > 0 and (tmp_path / "latency.png").stat().st_size > 0
    assert any(line.startswith("goal end to end >= 20x naive") for line in result["goals"])
    fields = result["fields_e2e"]
    assert fields["fields"] == 20 and not fields["missing_or_duplicated"] and fields["chars_per_second"] > 0
    assert set(fields["exact"]) == {"comb", "free"} and fields["single_digits_per_second"] > 0
    # A quick run makes one pair, its single digits the e2e part's run.
    assert len(fields["pairs"]) == 1 and fields["single_digits_per_second"] == result["e2e"]["images_per_second"]
    assert any(line.startswith("goal fields end to end") for line in result["goals"])


def test_the_submit_bench_counts_a_single_image_submit(redis_url: str, mnist_test: MnistArrays, tmp_path: Path) -> None:
    write_digits(tmp_path, mnist_test[0][:4], mnist_test[1][:4])
    files = sorted(str(p) for p in tmp_path.rglob("*.png"))
    result = measure(redis_url, files[1:], rounds=1)
    assert result["jobs"] == 3 and result["ms_per_submit"] > 0
    assert 10 <= result["redis_commands_per_submit"] <= 24, result

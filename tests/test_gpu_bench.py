"""The GPU benchmark's script, run here on the CPU so that it works the day a GPU is at hand.

It also proves the offline path a GPU machine takes: the model saved from the registry into a
folder, then the run with no registry configured at all (it starts its own Redis).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(900)
def test_gpu_script_runs_on_the_cpu_from_a_saved_model(
    env: dict[str, str], published: str, mnist_root: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    save = [sys.executable, "-m", "bench.gpu", "--save-model", str(model)]
    subprocess.run(save, cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    offline = {k: v for k, v in env.items() if k != "INKQ_REDIS_URL"} | {"INKQ_BENCH_DEVICE": "cpu"}
    args = ["--quick", "--model", str(model), "--out", str(tmp_path / "out"), "--data-root", str(mnist_root)]
    run = subprocess.run(
        ["bash", "bench/gpu.sh", *args], cwd=ROOT, env=offline, capture_output=True, text=True, timeout=850, check=False
    )
    assert run.returncode == 0, run.stderr[-4000:]

    result = json.loads((tmp_path / "out" / "latest.json").read_text())
    assert result["model_version"] == published and result["device"] == "cpu"
    assert "failed_parts" not in result
    assert set(result["model_only"]) == {"eager_fp32", "compiled_fp32"}
    assert all(set(by_size) == {"1", "8"} and min(by_size.values()) > 0 for by_size in result["model_only"].values())
    assert result["agreement_with_eager_fp32"]["compiled_fp32"] >= 0.99
    assert result["test_accuracy"]["eager_fp32"] >= 0.9  # the small model is about 97% accurate
    e2e = result["e2e"]
    assert e2e["images"] == 200 and not e2e["missing_or_duplicated"] and e2e["errors"] == 0
    assert e2e["engine"].startswith("eager") and "on cpu" in e2e["engine"]
    assert result["worker_start_s"]["warm"] > 0 and result["worker_start_s"]["cold"] > 0
    assert set(result["e2e_by_preprocess_workers"]) == {"0", "2"}  # the pool's processes served it
    assert "end to end, one worker: 200 images" in run.stdout
    fields = result["fields_e2e"]  # the field reader on the same device, beside single digits
    assert fields["fields"] == 20 and not fields["missing_or_duplicated"] and fields["errors"] == 0
    assert fields["chars_per_second"] > 0 and "fields end to end: 20 in" in run.stdout
    shared = result["shared_device"]  # two workers on one device, both taking part
    assert shared["images"] == 200 and not shared["missing_or_duplicated"] and shared["workers_that_served"] == 2


def test_cuda_is_refused_with_advice_where_there_is_none(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal cannot happen here")
    run = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--device", "cuda", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode != 0 and "--device cpu" in run.stderr

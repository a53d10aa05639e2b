"""`trainer` end to end on a small MNIST subset, against a real Redis, in separate processes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN

pytestmark = pytest.mark.slow


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """A field stage of a few dozen fields: the default 5,000 cost 2-3 minutes per test here, and
    the stage's own behaviour is checked in test_registry_integration."""
    return env | {"INKQ_FIELD_STAGE_FIELDS": "24"}


def trainer(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "trainer"), *args], check=False, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.timeout(900)  # 150 s alone on 2 cores; over 300 s when the cores are shared
def test_train_publish_list_evaluate(env: dict[str, str], mnist_root: Path) -> None:
    run = trainer(
        env,
        "train",
        "--data-root",
        str(mnist_root),
        "--epochs",
        "2",
        "--limit",
        "2500",
        "--test-limit",
        "300",
        "--json",
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["version"] == "v1"
    assert 0.5 < summary["test_accuracy"] <= 1.0  # 30 steps on 2,000 images: far above chance (0.1)

    listed = json.loads(trainer(env, "versions", "--json").stdout)
    assert listed["current"] == "v1"
    (info,) = listed["versions"]
    assert info["preprocess_version"] and info["data_fingerprint"].startswith("mnist-train:2500:")
    assert info["metrics"]["test_accuracy"] == summary["test_accuracy"]
    # Measured on the validation split, so that auto may serve it in int8 on VNNI or AMX CPUs.
    assert 0.9 <= info["metrics"]["int8_agreement"] == summary["int8_agreement"] <= 1.0
    assert set(info["arch"]) >= {"name", "stem", "in_channels", "num_classes"}
    assert info["created"] > 0 and info["parent"] is None and len(info["sha256"]) == 64

    scored = trainer(env, "evaluate", "--data-root", str(mnist_root), "--limit", "300", "--no-compile", "--json")
    assert scored.returncode == 0, scored.stderr
    result = json.loads(scored.stdout.strip().splitlines()[-1])
    assert (result["version"], result["n"]) == ("v1", 300)
    assert abs(result["accuracy"] - summary["test_accuracy"]) < 0.02  # same images, serving engine


def test_options_come_from_the_environment(env: dict[str, str], mnist_root: Path) -> None:
    run = trainer(
        env
        | {
            "INKQ_DATA_ROOT": str(mnist_root),
            "INKQ_EPOCHS": "1",
            "INKQ_TRAIN_LIMIT": "300",
            "INKQ_TEST_LIMIT": "50",
            "INKQ_JSON": "1",
        },
        "train",
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1])["version"] == "v1"


def test_errors_are_one_clear_line(env: dict[str, str], tmp_path: Path) -> None:
    bad = trainer(env | {"INKQ_PRECISION": "fp8"}, "versions")
    assert bad.returncode != 0 and "INKQ_PRECISION='fp8' is invalid" in bad.stderr
    down = trainer(env | {"INKQ_REDIS_URL": "redis://127.0.0.1:1/0"}, "versions")
    assert down.returncode == 1 and "cannot reach Redis" in down.stderr
    missing = trainer(env, "evaluate", "--data-root", str(tmp_path))
    assert missing.returncode == 1 and "no current model" in missing.stderr
    empty = trainer(env, "versions")
    assert empty.returncode == 0 and "no model versions yet" in empty.stdout


def test_torchrun_data_parallel_training(env: dict[str, str], mnist_root: Path) -> None:
    """Two processes under torchrun (Gloo on the CPU): each trains a shard, rank 0 publishes once."""
    run = subprocess.run(
        [
            str(BIN / "torchrun"),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "trainer.cli",
            "train",
            "--data-root",
            str(mnist_root),
            "--epochs",
            "1",
            "--limit",
            "800",
            "--test-limit",
            "100",
            "--json",
        ],
        env=env | {"OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    published = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert [p.get("version") for p in published if p.get("version")] == ["v1"]
    listed = json.loads(trainer(env, "versions", "--json").stdout)
    assert [v["version"] for v in listed["versions"]] == ["v1"]
    assert listed["versions"][0]["training"]["world_size"] == 2

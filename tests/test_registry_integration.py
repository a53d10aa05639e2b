"""The safe registry end to end: `trainer train` behind the gate, and a real worker process
refusing a model whose preprocessing it does not implement."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from storage.connection import connect
from storage.keys import Keys
from storage.registry import Registry
from tests.conftest import BIN, WorkerProcess, wait_for
from tests.models import untrained_weights as random_model
from tests.models import version_meta as meta

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def trainer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "trainer"), *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.timeout(600)
def test_train_is_gated_and_make_current_overrides(env: dict[str, str], mnist_root: Path, redis_url: str) -> None:
    registry = Registry(connect(redis_url), Keys())
    # A current model this run cannot score (its weights fail their checksum): the gate cannot
    # show the new model is no worse, so it is kept as rejected unless the operator insists.
    v1 = registry.publish(random_model(1), meta()).version
    registry.redis.setrange(registry.keys.model_weights(v1), 1000, b"\x00" * 64)
    smoke = ["train", "--data-root", str(mnist_root), "--epochs", "1", "--limit", "200", "--test-limit", "50"]
    env = env | {"INKQ_FIELD_STAGE_FIELDS": "24"}
    run = trainer(env, *smoke)
    assert run.returncode == 0, run.stderr
    assert f"v2 rejected, current model stays {v1}" in run.stdout and "--make-current" in run.stdout
    listed = json.loads(trainer(env, "versions", "--json").stdout)
    assert listed["current"] == v1
    assert (listed["versions"][1]["status"], listed["versions"][1]["pruned"]) == ("rejected", True)

    forced = trainer(env, *smoke, "--make-current", "--json")
    assert forced.returncode == 0, forced.stderr
    summary = json.loads(forced.stdout.splitlines()[-1])
    assert (summary["version"], summary["promoted"], summary["current"]) == ("v3", True, "v3")
    assert "made current by --make-current" in summary["reason"]
    assert registry.current() == "v3"
    # The field stage ran (a few fields here): an eleven-class model whose digits are still read.
    info = registry.info("v3")
    stage = info.training["field_stage"]
    assert info.arch["num_classes"] == 11 and stage["cuts"] > 0 and stage["rejects"] > 0
    assert 0.0 <= info.metrics["val_accuracy"] == stage["mnist_val_accuracy"] <= 1.0


@pytest.mark.timeout(300)
def test_worker_refuses_preprocessing_it_does_not_implement(
    env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    registry = Registry(connect(redis_url), Keys())
    registry.publish(random_model(1), meta())
    worker = WorkerProcess(
        env, "preproc", tmp_path / "worker.log", {"compile": "false", "precision": "fp32", "buckets": "1,8"}
    )

    def heartbeat() -> dict[str, object]:
        return dict(json.loads(registry.redis.get(registry.keys.worker(worker.name)) or b"{}"))

    try:
        v2 = registry.publish(random_model(2), meta(preprocess_version="mnist-box16/7")).version
        wait_for(lambda: v2 in heartbeat().get("refused", {}), 60, f"the worker to refuse {v2}")  # type: ignore[operator]
        beat = heartbeat()
        assert beat["version"] == "v1" and beat["compile_fallback"] is None
        assert "mnist-box16/7" in beat["refused"][v2]  # type: ignore[index]
        v3 = registry.publish(random_model(3), meta()).version  # a good version is still taken
        wait_for(lambda: heartbeat().get("version") == v3, 120, f"the worker to switch to {v3}")
    finally:
        worker.stop()
    assert f"not switching to model {v2}" in worker.full_log()

"""Fine-tuning on labelled samples: gate, promotion, rejection, rollback, the watch loop's lock."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import redis
from redis.lock import Lock

from bench.synth import load_mnist, outlined, write_digits
from storage.connection import connect
from storage.keys import Keys
from storage.lock import held
from tests.conftest import BIN, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def trainer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "trainer"), *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


def producer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "producer"), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def label_folder(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    write_digits(folder, images, labels, style=outlined, by_label=True)
    return folder


@pytest.fixture()
def train_digits(mnist_root: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_mnist(mnist_root, train=True)
    return images[6000:6600], labels[6000:6600]


def versions(env: dict[str, str]) -> dict[str, object]:
    return json.loads(trainer(env, "versions", "--json").stdout)


@pytest.mark.timeout(1200)
def test_retrain_promotes_rejects_and_rolls_back(
    env: dict[str, str], published: str, mnist_root: Path, train_digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    # The small test model (about 97%) is noisier on 2,000 base images than a full one: a looser
    # tolerance here; the documented scenario runs the real one at 0.2 points.
    env = env | {"INKQ_DATA_ROOT": str(mnist_root), "INKQ_RETRAIN_EPOCHS": "6", "INKQ_BASE_TOLERANCE": "0.01"}
    images, labels = train_digits
    nothing = json.loads(trainer(env, "retrain", "--json").stdout.splitlines()[-1])
    assert (nothing["version"], nothing["promoted"]) == (None, False)
    assert "no new labelled samples" in nothing["reason"]

    assert producer(env, "label", str(label_folder(tmp_path / "style", images[:300], labels[:300]))).returncode == 0
    run = trainer(env, "retrain", "--json")
    assert run.returncode == 0, run.stderr
    good = json.loads(run.stdout.splitlines()[-1])
    assert good["promoted"], good
    assert good["after"]["new_heldout_accuracy"] > good["before"]["new_heldout_accuracy"]
    assert good["after"]["base_heldout_accuracy"] >= good["before"]["base_heldout_accuracy"] - 0.01
    phases = good["phase_seconds"]  # every step named, and together they are the run
    steps = ["prepare", "score_before", "train", "mix_and_calibrate", "score_after", "line_reader"]
    steps += ["bf16_agreement", "int8_agreement", "line_int8_agreement", "publish"]
    assert set(phases) == set(steps)  # the JSON's keys come sorted
    assert sum(phases.values()) <= good["seconds"] + 0.1 and phases["train"] > 0
    listed = versions(env)
    assert listed["current"] == good["version"] == "v2"
    v2 = listed["versions"][-1]  # type: ignore[index]
    assert (v2["parent"], v2["status"]) == ("v1", "promoted")
    assert 0.9 <= v2["metrics"]["int8_agreement"] <= 1.0  # measured for its own weights, so auto may serve int8

    # Training that wrecks the model: the candidate is kept as rejected, the current model stays.
    more = label_folder(tmp_path / "more", images[300:420], labels[300:420])
    assert producer(env, "label", str(more)).returncode == 0
    wreck = env | {"INKQ_RETRAIN_LEARNING_RATE": "40", "INKQ_RETRAIN_EPOCHS": "1"}  # one epoch is enough to wreck it
    bad = json.loads(trainer(wreck, "retrain", "--json").stdout.splitlines()[-1])
    assert not bad["promoted"] and bad["version"] == "v3"
    assert "not better" in bad["reason"] or "worse on the base" in bad["reason"]
    listed = versions(env)
    assert listed["current"] == "v2"
    assert listed["versions"][-1]["status"] == "rejected"  # type: ignore[index]

    # The rejected candidate's weights are pruned at once; its record stays.
    assert listed["versions"][-1]["pruned"]  # type: ignore[index]
    assert listed["versions"][1]["labels_upto"] == 300  # type: ignore[index]

    # Rolling back to v1 (which learned no labels) makes every label trainable again.
    assert "current model: v1" in trainer(env, "rollback").stdout
    assert versions(env)["current"] == "v1"
    client = connect(env["INKQ_REDIS_URL"])
    assert [int(client.get(k) or 0) for k in (Keys().labels_used, Keys().labels_tried)] == [0, 0]
    assert "current model: v2" in trainer(env, "rollback", "v2").stdout
    assert int(client.get(Keys().labels_used) or 0) == 300


@pytest.mark.timeout(900)
def test_watch_lock_prevents_concurrent_runs(
    env: dict[str, str],
    published: str,
    mnist_root: Path,
    train_digits: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
    redis_url: str,
) -> None:
    env = env | {"INKQ_DATA_ROOT": str(mnist_root), "INKQ_RETRAIN_EPOCHS": "1", "INKQ_WATCH_MIN_LABELS": "10"}
    images, labels = train_digits
    assert producer(env, "label", str(label_folder(tmp_path / "style", images[:60], labels[:60]))).returncode == 0
    client = connect(redis_url)
    with held(client, Keys().retrain_lock, Keys().registry_fence, 30, "test"):
        blocked = trainer(env, "watch", "--once")
        assert blocked.returncode == 0, blocked.stderr
        assert "another train, retrain or rollback is running" in json.loads(blocked.stdout.splitlines()[-1])["reason"]
        direct = trainer(env, "retrain")
        assert direct.returncode == 1 and "another train, retrain or rollback is running" in direct.stderr
    assert versions(env)["current"] == "v1" and len(versions(env)["versions"]) == 1  # type: ignore[arg-type]

    # A holder that died: its lock expires by itself and the next run goes ahead.
    Lock(client, Keys().retrain_lock, timeout=2).acquire()
    wait_for(lambda: not client.exists(Keys().retrain_lock), 10, "the abandoned lock to expire")
    ran = json.loads(trainer(env, "watch", "--once").stdout.splitlines()[-1])
    assert ran["version"] == "v2", ran
    after = json.loads(trainer(env, "watch", "--once").stdout.splitlines()[-1])
    assert after == {"skipped": True, "reason": "no new labels"}


def test_redis_lock_is_exclusive(redis_url: str) -> None:
    from storage.lock import LockHeldError

    client = redis.Redis.from_url(redis_url)
    with (
        held(client, "inkq:test-lock", "inkq:test-fence", 10, "job"),
        pytest.raises(LockHeldError),
        held(client, "inkq:test-lock", "inkq:test-fence", 10, "job"),
    ):
        pass
    with held(client, "inkq:test-lock", "inkq:test-fence", 10, "job"):  # released: free again
        pass


def test_watch_schedule(redis_url: str) -> None:
    from config import Settings
    from storage.labels import Labels
    from trainer.watch import due

    settings = Settings(watch_min_labels=3, watch_interval_s=60)
    labels = Labels(connect(redis_url), Keys())
    assert due(settings, labels, None, 1000.0) == (False, "no new labels")
    labels.add([("d1", b"x", 1, "a.png")], source="test")
    assert due(settings, labels, None, 1000.0)[0]  # never ran: any label is enough
    assert not due(settings, labels, 990.0, 1000.0)[0]  # ran 10 s ago, 1 < 3 labels
    assert due(settings, labels, 900.0, 1000.0)[0]  # interval passed
    labels.add([("d2", b"x", 2, "b.png"), ("d3", b"x", 3, "c.png")], source="test")
    assert due(settings, labels, 990.0, 1000.0)[0]  # enough labels
    labels.set_watermark(labels.latest_seq(), "tried")
    assert not due(settings, labels, None, 1000.0)[0]

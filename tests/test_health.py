"""`producer probe` exit codes follow a worker's readiness and health; `producer health` shows the
system: queue, workers, model, jobs in progress, dead letters."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.synth import WorkerProcess, write_digits
from config.settings import Settings
from producer.cli import cli
from producer.client import Client
from producer.healthcli import NO_REDIS, NOT_READY
from producer.local import free_port
from storage import workers
from storage.connection import connect
from storage.keys import Keys
from tests.conftest import BIN, MnistArrays


def producer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "producer"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def beat(redis_url: str, name: str, **fields: object) -> None:
    state = workers.WorkerState(hostname=name, **fields)  # type: ignore[arg-type]
    workers.write(connect(redis_url), Keys(), state, ttl_s=60)


@pytest.mark.parametrize(
    ("fields", "code", "says"),
    [
        ({"ready": True, "healthy": True}, 0, "is ready and healthy"),
        ({"ready": False, "healthy": True}, NOT_READY, "still loading or warming"),
        ({"ready": True, "healthy": False, "stalled_s": 75.0}, NOT_READY, "completed no batch for 75s"),
    ],
)
def test_probe_exit_code_follows_the_heartbeat(redis_url: str, fields: dict[str, object], code: int, says: str) -> None:
    beat(redis_url, "w1@host", **fields)
    run = CliRunner().invoke(cli, ["probe", "w1@host"], env={"INKQ_REDIS_URL": redis_url})
    assert run.exit_code == code and says in run.output


def test_probe_fails_on_a_silent_or_stale_worker(redis_url: str) -> None:
    env = {"INKQ_REDIS_URL": redis_url}
    run = CliRunner().invoke(cli, ["probe", "nobody@host"], env=env)
    assert run.exit_code == NOT_READY and "no heartbeat" in run.output
    beat(redis_url, "old@host", ready=True, healthy=True)
    stale = time.time() - 45
    client = connect(redis_url)
    state = workers.read(client, Keys(), "old@host")
    assert state is not None
    client.set(Keys().worker("old@host"), json.dumps(state.as_dict() | {"at": stale}))
    run = CliRunner().invoke(cli, ["probe", "old@host", "--max-age-s", "20"], env=env)
    assert run.exit_code == NOT_READY and "last heartbeat 45s ago" in run.output


def test_probe_without_redis_exits_2() -> None:
    run = CliRunner().invoke(cli, ["probe", "w@h"], env={"INKQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert run.exit_code == NO_REDIS and "Redis unreachable" in run.output


def test_health_shows_the_queue_jobs_and_model(
    redis_url: str, published: str, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    write_digits(tmp_path / "scans", mnist_test[0][:30], mnist_test[1][:30])
    client = Client(Settings(redis_url=redis_url, chunk_size=10))
    job = client.submit([str(tmp_path / "scans")]).job  # no worker runs: its 3 messages wait
    env = {"INKQ_REDIS_URL": redis_url}
    snap = json.loads(CliRunner().invoke(cli, ["health", "--json"], env=env).output.splitlines()[-1])
    assert snap["queue"] == {"queued": 3, "unacked": 0}
    assert snap["current_model"] == published and snap["workers"] == [] and snap["dead_letters"] == 0
    assert snap["jobs_in_progress"] == [{"job": job, "total": 30, "done": 0, "failed": 0}]
    text = CliRunner().invoke(cli, ["health"], env=env).output
    assert "queue: 3 messages waiting" in text and f"{job}: 0/30 done" in text and "workers: 0" in text


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_probe_follows_a_real_worker_from_ready_to_stopped(env: dict[str, str], published: str, tmp_path: Path) -> None:
    worker = WorkerProcess(env, "probed", tmp_path / "worker.log", {"compile": "false", "precision": "fp32"})
    try:
        run = producer(env, "probe", worker.name)
        assert run.returncode == 0, run.stderr + worker.log()
        snap = json.loads(producer(env, "health", "--json").stdout.splitlines()[-1])
        (row,) = [w for w in snap["workers"] if w["name"] == worker.name]
        assert row["ready"] and row["healthy"] and row["version"] == published
    finally:
        worker.stop()  # a warm shutdown removes its heartbeat
    run = producer(env, "probe", worker.name)
    assert run.returncode == NOT_READY and "no heartbeat" in run.stderr

"""The pipeline end to end with real parts: redis-server, `celery -A worker worker`, `producer`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bench.synth import on_paper
from config import Settings
from producer.client import Client
from storage import queue
from tests.conftest import BIN, MnistArrays, WorkerProcess, wait_for, write_digits

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def producer(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "producer"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def results_of(env: dict[str, str], job: str, timeout: float = 120) -> list[dict[str, Any]]:
    run = producer(env, "results", job, "--wait", "--timeout", str(timeout), "--format", "jsonl", timeout=timeout + 30)
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_folder_of_images_gives_every_result(
    env: dict[str, str], worker: WorkerProcess, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    truth = write_digits(tmp_path / "scans" / "nested", mnist_test[0][:200], mnist_test[1][:200])
    run = producer(env, "submit", str(tmp_path / "scans"), "--json")
    assert run.returncode == 0, run.stderr
    submitted = json.loads(run.stdout.strip().splitlines()[-1])
    assert submitted["items"] == 200 and submitted["rejected"] == []
    rows = results_of(env, submitted["job"])
    assert sorted(r["item"] for r in rows) == sorted(truth)  # every item, exactly once
    assert all(r["error"] is None and r["model_version"] == "v1" for r in rows)
    accuracy = np.mean([r["label"] == truth[str(r["item"])] for r in rows])
    assert accuracy >= 0.9, accuracy
    for r in rows:
        top3 = r["top3"]
        assert isinstance(top3, list) and top3[0] == [r["label"], r["confidence"]]
    status = json.loads(producer(env, "status", submitted["job"], "--json").stdout)
    assert (status["state"], status["done"], status["failed"]) == ("complete", 200, 0)
    assert status["finished"] >= status["created"]

    csv_out = producer(env, "results", submitted["job"], "--format", "csv").stdout.splitlines()
    assert csv_out[0] == "item,label,confidence,top3,model_version,error" and len(csv_out) == 201


def test_corrupt_files_fail_alone(
    env: dict[str, str], worker: WorkerProcess, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    folder = tmp_path / "scans"
    truth = write_digits(folder, mnist_test[0][:20], mnist_test[1][:20])
    good = (folder / "00000.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])  # valid header, broken data
    Image.new("L", (64, 64), 250).save(folder / "blank.png")
    (folder / "garbage.png").write_bytes(b"this is not an image")
    (folder / "notes.txt").write_text("not an image type: ignored")
    run = producer(env, "submit", str(folder), "--json")
    assert run.returncode == 0, run.stderr
    submitted = json.loads(run.stdout.strip().splitlines()[-1])
    assert submitted["items"] == 22
    assert [Path(r["path"]).name for r in submitted["rejected"]] == ["garbage.png"]
    rows = {Path(str(r["item"])).name: r for r in results_of(env, submitted["job"])}
    assert "truncated or corrupt" in str(rows["truncated.png"]["error"])
    assert "no ink" in str(rows["blank.png"]["error"])
    ok = [r for name, r in rows.items() if name not in ("truncated.png", "blank.png")]
    assert len(ok) == 20 and all(r["error"] is None and r["label"] is not None for r in ok)
    assert np.mean([r["label"] == truth[str(r["item"])] for r in ok]) >= 0.85
    status = json.loads(producer(env, "status", submitted["job"], "--json").stdout)
    assert (status["done"], status["failed"]) == (22, 2)


def test_concurrent_producers_share_batches(
    env: dict[str, str], published: str, mnist_test: MnistArrays, tmp_path: Path, redis_url: str
) -> None:
    w = WorkerProcess(
        env,
        "batcher",
        tmp_path / "worker.log",
        {"compile": "false", "precision": "fp32", "max_wait_ms": "400", "worker_threads": "4", "max_batch": "64"},
    )
    try:
        folders = []
        for n in range(2):
            folders.append(tmp_path / f"client{n}")
            write_digits(folders[-1], mnist_test[0][n * 12 : n * 12 + 12], mnist_test[1][n * 12 : n * 12 + 12])
        clients = [Client(Settings(redis_url=redis_url, chunk_size=12)) for _ in range(2)]
        jobs: list[str] = []
        go = threading.Barrier(2)

        def submit(client: Client, folder: Path) -> None:
            go.wait()
            jobs.append(client.submit([str(folder)]).job)

        threads = [threading.Thread(target=submit, args=(c, f)) for c, f in zip(clients, folders, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for job in jobs:
            assert clients[0].wait(job, timeout=60).complete
        batches: dict[int, set[str]] = {}
        for job in jobs:
            for r in clients[0].results(job):
                batches.setdefault(r["batch"]["id"], set()).add(job)
                assert r["batch"]["size"] <= 64
        assert any(len(owners) == 2 for owners in batches.values()), batches  # coalesced across clients
    finally:
        w.stop()


@pytest.mark.timeout(600)
def test_sigkilled_worker_loses_nothing(
    env: dict[str, str], published: str, mnist_test: MnistArrays, tmp_path: Path, redis_url: str
) -> None:
    settings = {
        "compile": "false",
        "precision": "fp32",
        "visibility_timeout_s": "4",
        "worker_threads": "2",
        "prefetch_multiplier": "2",
        "max_wait_ms": "1",
        # A message the kill catches between kombu's BRPOP and its unacked record is lost to the
        # broker: the sweeper requeues it about 10 s after the job's last result.
        "sweep_interval_s": "2",
        "sweep_stall_s": "10",
        "lock_ttl_s": "5",
    }
    truth = write_digits(tmp_path / "scans", mnist_test[0][:300], mnist_test[1][:300])
    client = Client(Settings(redis_url=redis_url, chunk_size=10))
    doomed = WorkerProcess(env, "doomed", tmp_path / "doomed.log", settings)
    job = client.submit([str(tmp_path / "scans")]).job
    wait_for(lambda: client.status(job).done >= 20, 60, "the first results")
    doomed.kill()
    assert not client.status(job).complete, "job finished before the worker was killed"
    rescuer = WorkerProcess(env, "rescuer", tmp_path / "rescuer.log", settings)
    try:
        status = client.wait(job, timeout=120)
        assert status.complete, rescuer.log()
        assert (status.total, status.done, status.failed) == (300, 300, 0)
        rows = client.results(job)
        assert sorted(r["item"] for r in rows) == sorted(truth)
        assert {r["worker"] for r in rows} == {doomed.name, rescuer.name}
    finally:
        rescuer.stop()


def test_redelivered_message_keeps_counters_exact(
    env: dict[str, str], worker: WorkerProcess, mnist_test: MnistArrays, tmp_path: Path, redis_url: str
) -> None:
    write_digits(tmp_path / "scans", mnist_test[0][:10], mnist_test[1][:10])
    client = Client(Settings(redis_url=redis_url))
    job = client.submit([str(tmp_path / "scans")]).job
    assert client.wait(job, timeout=60).complete
    first = client.results(job)
    # The same message again, as a broker would redeliver it after a lost acknowledgement.
    items = [[i, r["digest"], r["item"]] for i, r in enumerate(first)]
    queue.enqueue(client.app, job, items)
    wait_for(lambda: client.results(job)[0]["timings"] != first[0]["timings"], 60, "the redelivered results")
    status = client.status(job)
    assert (status.total, status.done, status.failed) == (10, 10, 0)
    again = client.results(job)
    assert [r["label"] for r in again] == [r["label"] for r in first]


def test_resubmission_stores_no_duplicate_bytes(redis_url: str, mnist_test: MnistArrays, tmp_path: Path) -> None:
    write_digits(tmp_path / "scans", mnist_test[0][:5], mnist_test[1][:5])
    on_paper(mnist_test[0][0]).save(tmp_path / "scans" / "copy.png")  # same bytes as 00000.png
    client = Client(Settings(redis_url=redis_url))
    first = client.submit([str(tmp_path / "scans")])
    second = client.submit([str(tmp_path / "scans")])
    assert first.job != second.job
    assert (first.items, first.stored) == (6, 5)
    assert (second.items, second.stored) == (6, 0)
    assert len(client.redis.keys("inkq:image:*")) == 5


def test_backpressure(redis_url: str, mnist_test: MnistArrays, tmp_path: Path) -> None:
    write_digits(tmp_path / "scans", mnist_test[0][:4], mnist_test[1][:4])
    client = Client(Settings(redis_url=redis_url, chunk_size=1, queue_max_messages=2))
    from producer.client import QueueFullError

    with pytest.raises(QueueFullError, match="INKQ_QUEUE_MAX_MESSAGES"):
        client.submit([str(tmp_path / "scans")], wait_for_room=False)
    assert queue.depth(client.redis, client.settings) == 2  # no worker: the messages wait in Redis


def test_cli_errors(env: dict[str, str], tmp_path: Path) -> None:
    down = producer(env | {"INKQ_REDIS_URL": "redis://127.0.0.1:1/0"}, "submit", str(tmp_path))
    assert down.returncode == 1 and "cannot reach Redis" in down.stderr
    (tmp_path / "empty").mkdir()
    empty = producer(env, "submit", str(tmp_path / "empty"))
    assert empty.returncode == 1 and "no images found" in empty.stderr
    unknown = producer(env, "status", "nope")
    assert unknown.returncode == 1 and "no job 'nope'" in unknown.stderr
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "again").symlink_to(loop)
    looped = producer(env, "submit", str(loop), "--json")
    assert looped.returncode == 1 and "symbolic link loop" in looped.stderr


def test_producer_never_imports_torch() -> None:
    code = "import sys, producer.cli, producer.client; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

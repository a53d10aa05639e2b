"""Hostile input is the normal case: every file ends as a result, a per-item error or a clear
rejection; nothing else. The corpus is tests/hostile.py."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from config.errors import ImageError
from config.settings import Settings
from producer.client import Client
from producer.files import find_images, read_capped
from recognizer import scan
from recognizer.prediction import Prediction
from recognizer.preprocessing import Preprocessor
from storage.connection import connect
from storage.jobs import ItemResult, Jobs
from storage.keys import Keys
from storage.utils import as_text
from tests.conftest import BIN, MnistArrays, WorkerProcess, write_digits
from tests.hostile import Expect, write_corpus
from worker.metrics import WorkerMetrics
from worker.replica import Replica

LIMITS = {"max_bytes": Settings().max_image_bytes, "max_pixels": Settings().max_image_pixels}
# MNIST test digits the corpus is made of (their labels: 7 2 1 0 4 1 4 9 5 9 0 6).
DIGITS = slice(0, 12)


@pytest.fixture()
def corpus(tmp_path: Path, mnist_test: MnistArrays) -> dict[str, Expect]:
    return write_corpus(tmp_path / "corpus", mnist_test[0][DIGITS], mnist_test[1][DIGITS])


def test_corpus_is_large_and_mixed(corpus: dict[str, Expect]) -> None:
    kinds = [e.kind for e in corpus.values()]
    assert len(corpus) - kinds.count("ok") >= 25 and kinds.count("ok") >= 20, kinds


@pytest.mark.filterwarnings("ignore:.*(EXIF|Tag data):UserWarning")
def test_every_corpus_file_reads_or_fails_with_an_image_error(corpus: dict[str, Expect]) -> None:
    walked = {f.path: f.problem for f in find_images([str(next(iter(corpus)).rsplit("/", 1)[0])])}
    for path, expect in corpus.items():
        if expect.kind == "skipped":
            assert path not in walked, path
            continue
        if walked.get(path):  # refused by the folder walk: links and loops
            assert expect.kind == "rejected" and re.search(expect.pattern, str(walked[path])), (path, walked[path])
            continue
        data = Path(path).read_bytes()
        try:
            scan.probe(data, **LIMITS)
            gray = scan.decode(data, **LIMITS)
            out = scan.prepare(gray)
            scan.preprocess(data, **LIMITS)
        except ImageError as exc:  # anything else fails the test with its traceback
            stage = "rejected" if _probe_fails(data) else "error"
            assert (stage, True) == (expect.kind, bool(re.search(expect.pattern, str(exc)))), (path, str(exc))
            continue
        assert expect.kind == "ok" and expect.page is not None, (path, "read, but must fail")
        # Read as the page it shows: the right way up, the first frame, ink on paper.
        diff = float(np.abs(out - scan.prepare(expect.page)).mean())
        assert diff < 0.08, (path, diff)


def _probe_fails(data: bytes) -> bool:
    try:
        scan.probe(data, **LIMITS)
    except ImageError:
        return True
    return False


def test_files_are_read_capped_and_only_when_regular(tmp_path: Path) -> None:
    """A FIFO or device with an image's name is refused at once, never waited on; a large file is
    read only one byte past the limit."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        read_capped(fifo, 100)
    with pytest.raises(OSError, match="not a regular file"):
        read_capped(Path("/dev/zero"), 100)
    (tmp_path / "big.png").write_bytes(b"x" * 10_000)
    assert len(read_capped(tmp_path / "big.png", 100)) == 101


class _Engine:
    version = "v1"

    def predict(self, batch: Any) -> list[Prediction]:
        return [Prediction(3, 0.9, [(3, 0.9)]) for _ in range(len(batch))]


class _Images:
    """The image store, in memory: a digest's bytes are its name."""

    def fetch_images(self, digests: list[str]) -> list[bytes | None]:
        return [d.encode() for d in digests]


def test_any_exception_in_preprocessing_fails_that_item_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: even an exception scan never should raise stays with its image."""
    replica = Replica.__new__(Replica)  # no Redis, no model: only the batch function is under test
    replica.settings, replica.engine = Settings(), _Engine()  # type: ignore[assignment]
    replica.jobs = _Images()  # type: ignore[assignment]
    replica.prep = Preprocessor(0, max_bytes=10**6, max_pixels=10**6)
    replica.metrics = WorkerMetrics()
    good = np.zeros((1, 28, 28), np.float32)
    raised = {b"key": KeyError("XResolution"), b"zero": ZeroDivisionError("division by zero")}

    def preprocess(blob: bytes, **_: int) -> np.ndarray:
        if blob in raised:
            raise raised[blob]
        return good

    monkeypatch.setattr(scan, "preprocess", preprocess)
    served = replica._run(["ok", "key", "zero", "ok"])
    assert [s.error for s in served] == [None, "KeyError: 'XResolution'", "ZeroDivisionError: division by zero", None]
    assert [s.prediction.label if s.prediction else None for s in served] == [3, None, None, 3]


def producer(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "producer"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_hostile_corpus_job_completes_and_the_worker_survives(
    env: dict[str, str], published: str, corpus: dict[str, Expect], mnist_test: MnistArrays, tmp_path: Path
) -> None:
    worker = WorkerProcess(env, "hostile", tmp_path / "worker.log", {"compile": "false", "precision": "fp32"})
    try:
        folder = str(tmp_path / "corpus")
        run = producer(env, "submit", folder, "--json")
        assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
        submitted = json.loads(run.stdout.strip().splitlines()[-1])
        rejected = {r["path"]: r["error"] for r in submitted["rejected"]}
        items = {p: e for p, e in corpus.items() if e.kind in ("ok", "error")}
        assert sorted(rejected) == sorted(p for p, e in corpus.items() if e.kind == "rejected")
        for path, error in rejected.items():
            assert re.search(corpus[path].pattern, error), (path, error)
        assert submitted["items"] == len(items)

        # Bounded: on a poison batch that is requeued for ever, this times out and fails.
        got = producer(env, "results", submitted["job"], "--wait", "--timeout", "120", "--format", "jsonl", timeout=180)
        assert got.returncode == 0, (got.stderr, worker.log())
        rows = [json.loads(line) for line in got.stdout.splitlines()]
        assert sorted(r["item"] for r in rows) == sorted(items)  # every item, exactly once
        for row in rows:
            expect = items[row["item"]]
            if expect.kind == "ok":
                assert (row["error"], row["label"]) == (None, expect.label), (row["item"], row)
            else:
                assert row["label"] is None and re.search(expect.pattern, str(row["error"])), (row["item"], row)
        status = json.loads(producer(env, "status", submitted["job"], "--json").stdout)
        failed = sum(1 for e in items.values() if e.kind == "error")
        assert (status["state"], status["done"], status["total"], status["failed"]) == (
            "complete",
            len(items),
            len(items),
            failed,
        )

        # Still alive and serving: a fresh job after the corpus completes too.
        assert worker.process.poll() is None
        write_digits(tmp_path / "after", mnist_test[0][20:24], mnist_test[1][20:24])
        again = producer(env, "submit", str(tmp_path / "after"), "--json")
        job = json.loads(again.stdout.strip().splitlines()[-1])["job"]
        after = producer(env, "results", job, "--wait", "--timeout", "60", "--format", "jsonl", timeout=90)
        assert after.returncode == 0 and len(after.stdout.splitlines()) == 4, after.stderr
        assert "Traceback" not in worker.full_log(), worker.log()  # no task failed, nothing requeued
    finally:
        worker.stop()


@pytest.mark.integration
def test_label_rejects_hostile_files_by_name_without_a_traceback(
    env: dict[str, str], corpus: dict[str, Expect], tmp_path: Path
) -> None:
    source = Path(next(iter(corpus))).parent
    poison = source / "exif-bad-rational.jpg"
    bad = ["truncated.jpg", "corrupt-quant.jpg", "not-finite.tif", "blank-page.png", "corrupt-offset.tif"]
    folder = tmp_path / "labels"
    for n, name in enumerate([poison.name, *bad]):
        (folder / str(n % 10)).mkdir(parents=True, exist_ok=True)
        (folder / str(n % 10) / name).write_bytes((source / name).read_bytes())
    run = producer(env, "label", str(folder))
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert f"rejected {len(bad)} of {len(bad) + 1}, nothing stored" in run.stderr, run.stderr
    reasons = {line.strip().split(": ", 1)[0]: line for line in run.stderr.splitlines() if ": " in line}
    for name in bad:
        assert any(Path(p).name == name for p in reasons), (name, run.stderr)
    assert "truncated or corrupt (OSError" in run.stderr and "not a number" in run.stderr
    assert poison.name not in run.stderr  # hostile EXIF, readable page: accepted

    alone = tmp_path / "poison" / "5"
    alone.mkdir(parents=True)
    (alone / poison.name).write_bytes(poison.read_bytes())
    run = producer(env, "label", str(alone.parent))
    assert run.returncode == 0 and "stored 1 labelled samples" in run.stdout, run.stderr


@pytest.mark.integration
def test_review_export_writes_only_inside_its_folder(
    env: dict[str, str], redis_url: str, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    """Crafted Redis data: an item path that climbs out, a job id that does, CSV-breaking labels."""
    client, keys = connect(redis_url), Keys()
    jobs = Jobs(client, keys, 3600)
    (path,) = write_digits(tmp_path / "img", mnist_test[0][:1], mnist_test[1][:1])
    data = Path(path).read_bytes()
    digest = "d" * 64
    jobs.store_images({digest: data})
    real = jobs.create(3)
    crafted = "../../evil"
    client.hset(keys.job(crafted), mapping={"total": 1, "done": 0, "failed": 0, "created": 0})
    bodies: list[dict[str, Any]] = [
        {"item": "../../evil.png", "label": 1},
        {"item": "a.png", "label": '1,"2"\n../../x.png,3'},
        {"item": "b.png\n,9", "label": "=cmd|' /C calc'!A0"},
    ]
    common: dict[str, Any] = {"digest": digest, "review": True, "confidence": 0.2, "top3": []}
    results = [ItemResult(real, n, body | common) for n, body in enumerate(bodies)]
    results.append(ItemResult(crafted, 0, {"item": "x.png", "label": 2} | common))
    jobs.write_results(results)
    client.zadd(keys.review, {f"{crafted}:0": 1.0})

    out = tmp_path / "sandbox" / "inner" / "export"
    run = producer(env, "review", "--export", str(out))
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    expected = sorted(f"sandbox/inner/export/{name}" for name in [*(f"{real}-{n:06d}.png" for n in range(3))])
    assert written == sorted(["img/00000.png", "sandbox/inner/export/labels.csv", *expected]), written
    with (out / "labels.csv").open(newline="") as f:
        sheet = list(csv.reader(f))
    # Only a digit is a label; the rest is left blank for a person to fill in.
    assert sheet == [["path", "label"], *([f"{real}-{n:06d}.png", label] for n, label in enumerate(["1", "", ""]))]


def test_review_listing_survives_crafted_marks_and_rows(redis_url: str) -> None:
    """Review marks and rows nobody but a worker should write: listed or dropped, never a crash."""
    client, keys = connect(redis_url), Keys()
    jobs = Jobs(client, keys, 3600)
    job = jobs.create(3)
    common: dict[str, Any] = {"review": True}
    jobs.write_results(
        [
            ItemResult(job, 0, {"item": "ok.png", "digest": "a" * 64, "label": 4, "confidence": 0.3, "top3": []}),
            ItemResult(job, 1, {"item": "no-digest.png"} | common),  # no digest: nothing to label
            ItemResult(job, 2, {"digest": "b" * 64} | common),  # fields missing: shown as null
        ]
    )
    client.zadd(keys.review, {f"{job}:0": 1.0, f"{job}:1": 1.0, f"{job}:2": 1.0, f"{job}:x": 1.0, "nocolon": 1.0})
    rows = Client(Settings(redis_url=redis_url)).review()
    assert [(r["index"], r["item"], r["label"]) for r in rows] == [(0, "ok.png", 4), (2, None, None)]
    left = {as_text(m) for m in client.zrange(keys.review, 0, -1)}
    assert left == {f"{job}:0", f"{job}:2"}  # the unusable marks are gone

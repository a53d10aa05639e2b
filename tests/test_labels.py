"""Label intake and the review queue, against a real Redis, through the `producer` CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import redis

from bench.synth import on_paper
from config import Settings
from storage.connection import connect
from storage.jobs import ItemResult, Jobs
from storage.keys import Keys
from storage.labels import Labels
from tests.conftest import BIN, MnistArrays


def producer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "producer"), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def labels(redis_url: str) -> Labels:
    return Labels(connect(redis_url), Keys())


def save(path: Path, digit: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    on_paper(digit).save(path)
    return path


def test_folder_laid_out_by_label(env: dict[str, str], redis_url: str, mnist_test: MnistArrays, tmp_path: Path) -> None:
    images, truth = mnist_test
    for i in range(6):
        save(tmp_path / "set" / str(truth[i]) / f"{i}.png", images[i])
    run = producer(env, "label", str(tmp_path / "set"), "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["stored"] == 6
    stored = labels(redis_url).all()
    assert sorted(s.label for s in stored) == sorted(int(t) for t in truth[:6])
    assert all(s.source == "folder:set" for s in stored)
    # Durable: no expiry on labelled images, unlike job data.
    client = redis.Redis.from_url(redis_url)
    assert all(client.ttl(Keys().label_image(s.digest)) == -1 for s in stored)
    # The same images again: deduplicated by content, not stored twice.
    assert producer(env, "label", str(tmp_path / "set")).returncode == 0
    assert labels(redis_url).count() == 6


def test_csv_with_relative_paths(env: dict[str, str], redis_url: str, mnist_test: MnistArrays, tmp_path: Path) -> None:
    images, truth = mnist_test
    rows = ["path,label"]
    for i in range(3):
        save(tmp_path / "batch" / "img" / f"{i}.png", images[i])
        rows.append(f"img/{i}.png,{truth[i]}")
    (tmp_path / "batch" / "labels.csv").write_text("\n".join(rows) + "\n")
    run = producer(env, "label", "--csv", str(tmp_path / "batch" / "labels.csv"))
    assert run.returncode == 0, run.stderr
    assert labels(redis_url).count() == 3


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"12/a.png": 0}, "label '12' is not one of 0-9"),
        ({"x/a.png": 0}, "label 'x' is not one of 0-9"),
        ({"3/broken.png": None}, "not a readable image"),
    ],
)
def test_invalid_folder_input_stores_nothing(
    env: dict[str, str],
    redis_url: str,
    mnist_test: MnistArrays,
    tmp_path: Path,
    layout: dict[str, int | None],
    message: str,
) -> None:
    save(tmp_path / "set" / "5" / "good.png", mnist_test[0][0])
    for name, index in layout.items():
        if index is None:
            (tmp_path / "set" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "set" / name).write_bytes(b"not a png")
        else:
            save(tmp_path / "set" / name, mnist_test[0][index])
    run = producer(env, "label", str(tmp_path / "set"))
    assert run.returncode == 1 and message in run.stderr and "nothing stored" in run.stderr
    assert labels(redis_url).count() == 0


def test_csv_paths_outside_the_folder_are_rejected(
    env: dict[str, str], redis_url: str, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    save(tmp_path / "outside.png", mnist_test[0][0])
    save(tmp_path / "batch" / "in.png", mnist_test[0][1])
    (tmp_path / "batch" / "labels.csv").write_text("in.png,2\n../outside.png,7\n")
    run = producer(env, "label", "--csv", str(tmp_path / "batch" / "labels.csv"))
    assert run.returncode == 1 and "is outside" in run.stderr
    assert labels(redis_url).count() == 0


def _fake_results(redis_url: str, mnist_test: MnistArrays, tmp_path: Path) -> tuple[Jobs, str]:
    """A job with two results written through the real result store (as a worker would)."""
    jobs = Jobs(connect(redis_url), Keys(), ttl_s=3600)
    paths = [save(tmp_path / "scans" / f"{i}.png", mnist_test[0][i]) for i in range(2)]
    import hashlib

    blobs = {hashlib.sha256(p.read_bytes()).hexdigest(): p.read_bytes() for p in paths}
    jobs.store_images(blobs)
    job = jobs.create(2)
    for index, ((digest, _), confidence) in enumerate(zip(blobs.items(), (0.55, 0.99), strict=True)):
        body = {
            "item": str(paths[index]),
            "digest": digest,
            "label": 4,
            "confidence": confidence,
            "top3": [[4, confidence]],
            "model_version": "v1",
            "error": None,
            "review": confidence < Settings().review_threshold,
        }
        jobs.write_results([ItemResult(job, index, body)])
    return jobs, job


def test_review_export_and_label_back(
    env: dict[str, str], redis_url: str, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    _, job = _fake_results(redis_url, mnist_test, tmp_path)
    listed = [json.loads(line) for line in producer(env, "review", "--job", job).stdout.splitlines()]
    assert [(r["index"], r["confidence"]) for r in listed] == [(0, 0.55)]
    run = producer(env, "review", "--export", str(tmp_path / "todo"))
    assert run.returncode == 0, run.stderr
    sheet = (tmp_path / "todo" / "labels.csv").read_text().splitlines()
    assert sheet[0] == "path,label" and sheet[1].endswith(",4") and len(sheet) == 2
    (tmp_path / "todo" / "labels.csv").write_text(f"{sheet[0]}\n{sheet[1][:-1]}{mnist_test[1][0]}\n")
    assert producer(env, "label", "--csv", str(tmp_path / "todo" / "labels.csv")).returncode == 0
    assert labels(redis_url).all()[0].label == int(mnist_test[1][0])
    assert producer(env, "review").stdout == ""  # labelled: no longer waiting for review


def test_correction_of_a_result(env: dict[str, str], redis_url: str, mnist_test: MnistArrays, tmp_path: Path) -> None:
    _, job = _fake_results(redis_url, mnist_test, tmp_path)
    item = str(tmp_path / "scans" / "1.png")
    run = producer(env, "label", "--job", job, "--item", item, "9", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout).items() >= {"label": 9, "was": 4, "item": item}.items()
    (sample,) = labels(redis_url).all()
    assert (sample.label, sample.source) == (9, f"correction:{job}")
    bad = producer(env, "label", "--job", job, "--item", item, "11")
    assert bad.returncode == 1 and "not one of 0-9" in bad.stderr
    missing = producer(env, "label", "--job", job, "--item", "nope.png", "3")
    assert missing.returncode == 1 and "no result for item" in missing.stderr
    assert labels(redis_url).count() == 1

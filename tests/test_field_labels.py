"""The learning loop on fields: field texts as labels (CSV and corrections), and their images cut
into aligned training characters for a retrain."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from bench.synth import STYLES, DigitPool, load_mnist, render_field
from config import Settings
from storage.connection import connect
from storage.jobs import ItemResult, Jobs
from storage.keys import Keys
from storage.labels import FIELD, Labels
from tests.conftest import BIN
from tests.test_fields import NearestDigits
from trainer.labelled import labelled_split


@pytest.fixture(scope="module")
def pool(mnist_root: Path) -> DigitPool:
    return DigitPool(*load_mnist(mnist_root, train=True))


def producer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "producer"), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_field_texts_are_stored_from_a_csv_and_cut_into_aligned_characters(
    env: dict[str, str], redis_url: str, pool: DigitPool, tmp_path: Path
) -> None:
    folder = tmp_path / "fields"
    folder.mkdir()
    rows = ["path,text"]
    for i, text in enumerate(["90210", "4417"]):
        render_field(pool, (8, i), STYLES["comb"], text=text).pil().save(folder / f"f{i}.png")
        rows.append(f"f{i}.png,{text}")
    render_field(pool, (8, 2), STYLES["comb"], text="123").pil().save(folder / "short.png")
    rows.append("short.png,12345")  # a text the reading cannot be aligned with: 3 cuts, 5 digits
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    run = producer(env, "label", "--csv", str(folder / "labels.csv"), "--json")
    assert run.returncode == 0, run.stderr
    labels = Labels(connect(redis_url), Keys())
    stored = {Path(s.path).name: s for s in labels.all()}
    assert stored["f0.png"].text == "90210" and stored["f0.png"].label == FIELD

    knn = NearestDigits(pool.images[:3000], pool.labels[:3000])
    data = labelled_split(labels, labels.all(), Settings(), knn)
    assert (data.fields, data.unaligned) == (2, 1)
    assert data.split.labels.tolist() == [9, 0, 2, 1, 0, 4, 4, 1, 7]
    assert data.split.images.shape == (9, 1, 28, 28)
    assert float(data.split.images.min()) >= 0.0 and float(data.split.images.max()) <= 1.0
    # The cuts are characters the network can read: most read as their aligned digit.
    inputs = list(((data.split.images - 0.1307) / 0.3081).numpy())
    right = sum(p.label == int(y) for p, y in zip(knn.predict(inputs), data.split.labels, strict=True))
    assert right >= 7, right


def test_a_field_job_item_is_corrected_with_its_text_and_a_digit_job_refuses_one(
    env: dict[str, str], redis_url: str, pool: DigitPool, tmp_path: Path
) -> None:
    client = connect(redis_url)
    jobs = Jobs(client, Keys(), 3600)
    image = tmp_path / "zip.png"
    render_field(pool, (9, 0), STYLES["comb"], text="90210").pil().save(image)
    data = image.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    jobs.store_images({digest: data})
    field_job = jobs.create(1, {"read": {"kind": "field", "rule": None}})
    digit_job = jobs.create(1)
    for job in (field_job, digit_job):
        row = {"item": str(image), "digest": digest, "kind": "field", "text": "90216", "label": None}
        jobs.write_results([ItemResult(job, 0, row)])
    run = producer(env, "label", "--job", field_job, "--item", "0", "90210", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout).items() >= {"label": "90210", "was": "90216"}.items()
    (sample,) = Labels(client, Keys()).all()
    assert sample.text == "90210"
    refused = producer(env, "label", "--job", digit_job, "--item", "0", "90210")
    assert refused.returncode == 1 and "not one of 0-9" in refused.stderr

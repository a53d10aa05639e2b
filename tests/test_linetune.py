"""The line reader learns from labelled fields: labelled field images become training lines, a
fine-tuned reader is adopted only when the gate says so, and a retrain without a line reader or
without labelled fields leaves it alone. Real Redis, real generated fields, real (short) training;
the gate's scores are scripted where a branch of the decision is the point."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch

from bench.synth import STYLES, DigitPool, load_mnist, render_field
from config import Settings
from recognizer import artifact
from recognizer.sequence import HEIGHT, build
from storage.connection import connect
from storage.keys import Keys
from storage.labels import Labels
from tests.models import untrained_weights
from trainer import linetune


@pytest.fixture(scope="module")
def pool(mnist_root: Path) -> DigitPool:
    return DigitPool(*load_mnist(mnist_root, train=True))


def png(field: object) -> bytes:
    out = io.BytesIO()
    field.pil().save(out, format="PNG")  # type: ignore[attr-defined]
    return out.getvalue()


def stored(redis_url: str, pool: DigitPool, texts: list[str], style: str = "free") -> Labels:
    labels = Labels(connect(redis_url), Keys())
    samples = []
    for i, text in enumerate(texts):
        data = png(render_field(pool, (12, i), STYLES[style], text=text))
        samples.append((hashlib.sha256(data).hexdigest(), data, text, f"f{i}.png"))
    labels.add(samples, "test")
    return labels


def test_labelled_fields_become_lines_with_their_texts(redis_url: str, pool: DigitPool) -> None:
    labels = stored(redis_url, pool, ["90210", "4417", "123"])
    labels.add([("d" * 64, b"not an image", "55", "broken.png")], "test")
    lines = linetune.labelled_lines(labels, labels.all(), Settings())
    assert lines.texts == ["90210", "4417", "123"]  # the broken image is skipped, not fatal
    assert lines.kinds == ["free"] * 3
    assert all(a.shape[0] == HEIGHT and a.dtype.name == "uint8" and a.max() > 100 for a in lines.ink)


@pytest.mark.parametrize(
    ("scores", "adopted", "words"),
    [
        ([40.0, 70.0, 60.0, 69.5], True, "line reader: held-out labelled fields 40.0% -> 60.0%"),
        ([40.0, 70.0, 40.0, 71.0], False, "line reader not better"),
        ([40.0, 70.0, 60.0, 60.0], False, "line reader worse on generated fields"),
    ],
)
def test_the_gate_adopts_a_reader_only_when_better_and_no_worse_on_generated_fields(
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    pool: DigitPool,
    mnist_root: Path,
    scores: list[float],
    adopted: bool,
    words: str,
) -> None:
    labels = stored(redis_url, pool, ["31", "4417", "90210", "81", "562"])
    lines = linetune.labelled_lines(labels, labels.all(), Settings())
    told = iter(scores)  # held before, guard before, held after, guard after
    monkeypatch.setattr(linetune, "_exact", lambda model, lines: next(told))
    monkeypatch.setattr(linetune, "STEPS", 2)
    monkeypatch.setattr(linetune, "MIN_REPLAY", 16)
    monkeypatch.setattr(linetune, "GUARD_FIELDS", 4)
    torch.manual_seed(0)
    parent = build().state_dict()
    out = linetune.tune_lines(Settings(data_root=str(mnist_root)), parent, lines, lines, seed=3)
    assert out.adopted is adopted and words in out.reason, out.reason
    assert out.figures == {
        "held_before": scores[0],
        "guard_before": scores[1],
        "held_after": scores[2],
        "guard_after": scores[3],
    }
    if adopted:
        assert out.state is not None and not torch.equal(out.state["fc.weight"], parent["fc.weight"])
    else:
        assert out.state is None


def test_nothing_is_tried_without_a_line_reader_or_without_labelled_fields(redis_url: str, pool: DigitPool) -> None:
    labels = stored(redis_url, pool, ["4417", "90210"])
    samples = labels.all()
    plain = untrained_weights(0)
    assert linetune.line_half(Settings(), labels, plain, samples, samples, 0).reason == ""
    with_reader = artifact.with_sequence(plain, build())
    assert linetune.line_half(Settings(), labels, with_reader, [], samples, 0).reason == ""
    none_held = linetune.tune_lines(
        Settings(),
        build().state_dict(),
        linetune.labelled_lines(labels, samples, Settings()),
        linetune.labelled_lines(labels, [], Settings()),
        0,
    )
    assert not none_held.adopted and "no held-out labelled fields" in none_held.reason

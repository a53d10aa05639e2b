"""The CTC sequence reader's parts: line preparation, best-path decoding, boxes in the crop's
pixels, per-crop errors, and a few training steps that lower the CTC loss. Fast: no test waits for
a trained network; decoding is checked on log-probabilities written by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.synth import STYLES, DigitPool, load_mnist, render_field
from config.errors import ArtifactCorruptError, BlankImageError, ImageTooLargeError
from recognizer import artifact, network
from recognizer.engine import Engine, bf16_capable
from recognizer.sequence import BLANK, HEIGHT, STRIDE, SequenceReader, best_path, build, decode, frames, line_input
from trainer.sequence import Lines, _loss, evaluate, train


@pytest.fixture(scope="module")
def pool(mnist_root: Path) -> DigitPool:
    images, labels = load_mnist(mnist_root, train=True)
    return DigitPool(images[:3000], labels[:3000])


def _one_hot_path(path: list[int]) -> torch.Tensor:
    probs = torch.full((len(path), BLANK + 1), 0.01)
    for t, k in enumerate(path):
        probs[t, k] = 0.9
    return (probs / probs.sum(1, keepdim=True)).log()


def test_best_path_merges_repeats_and_drops_blanks() -> None:
    b = BLANK
    assert best_path([b, 4, 4, b, 4, b, b, 1, 2, 2]) == [(4, 1, 3), (4, 4, 5), (1, 7, 8), (2, 8, 10)]
    assert best_path([b, b]) == [] and best_path([]) == []


@pytest.mark.parametrize("kind", ["free", "comb", "box"])
def test_a_field_becomes_one_normalised_line(pool: DigitPool, kind: str) -> None:
    field = render_field(pool, (5, 1), STYLES[kind])
    line = line_input(field.image)
    assert line.x.shape[:2] == (1, HEIGHT) and line.x.dtype == np.float32
    assert line.width % STRIDE == 0 and line.width >= 8 * len(field.text)  # room for every character
    # The printed rules are gone: the line holds the handwriting alone, about as much ink as it has.
    ink = line.x[0] > 0.5
    assert ink[:, :3].sum() == 0 and ink[:, -3:].sum() == 0  # paper margins left and right
    assert line.layout == kind  # what printed rules the reader found, as the segmenting reader says


def test_decoding_gives_characters_with_boxes_in_the_crop(pool: DigitPool) -> None:
    field = render_field(pool, (5, 2), STYLES["free"], text="407")
    line = line_input(field.image)
    n = frames(line.width)
    # Each digit's run of frames sits under its true box: map box centres to frames.
    path = [BLANK] * n
    for digit, box in zip("407", field.boxes, strict=True):
        centre = ((box[0] + box[2]) / 2 - line.left) * line.scale / STRIDE
        for t in range(max(0, math.floor(centre) - 1), min(n, math.floor(centre) + 1)):
            path[t] = int(digit)
    reading = decode(_one_hot_path(path), line)
    assert reading.text == "407" and len(reading.chars) == 3
    for char, box in zip(reading.chars, field.boxes, strict=True):
        assert char.top3[0][0] == char.label and abs(sum(p for _, p in char.top3) - 1.0) < 0.3
        overlap = min(char.box[2], box[2]) - max(char.box[0], box[0])
        assert overlap > 0, (char.box, box)  # found where the digit is
    assert 0.0 < reading.confidence <= 1.0


def test_each_crop_fails_alone(pool: DigitPool) -> None:
    reader = SequenceReader(build())
    blank = np.full((40, 120, 3), 255, np.uint8)
    huge = np.zeros((3000, 1500), np.uint8)
    good = render_field(pool, (5, 3), STYLES["comb"]).image
    out = reader.read([blank, good, huge])
    assert isinstance(out[0], BlankImageError) and isinstance(out[2], ImageTooLargeError)
    assert not isinstance(out[1], Exception) and all(0 <= c.label <= 9 for c in out[1].chars)


def test_a_few_steps_lower_the_ctc_loss(pool: DigitPool) -> None:
    fields = [render_field(pool, (6, i), STYLES["free"]) for i in range(8)]
    prepared = [line_input(f.image) for f in fields]
    ink = [np.clip(np.round((p.x[0] * 0.3081 + 0.1307) * 255), 0, 255).astype(np.uint8) for p in prepared]
    lines = Lines(ink, [f.text for f in fields], [f.kind for f in fields])
    torch.manual_seed(0)
    model = build()
    everything = np.arange(len(fields))
    before = _loss(model.train(), lines, everything).item()
    train(model, lines, epochs=3, batch=4, lr=2e-3)
    after = _loss(model.train(), lines, everything).item()
    assert after < 0.8 * before, (before, after)
    assert set(evaluate(model, lines)) == {"free"}


def test_a_version_carries_its_line_reader_in_its_one_file() -> None:
    digits, lines = network.build(), build()
    data = artifact.dump(digits, None, lines)
    assert artifact.load_into(network.build(), data) is not None  # the digit network ignores it
    state = artifact.sequence_state(data)
    assert state is not None and torch.equal(state["fc.weight"], lines.fc.weight)
    engine = Engine.from_weights(data, network.DEFAULT_ARCH, compile=False, precision="fp32")
    assert engine.sequence is not None and "fields by fp32 line reader" in engine.describe()
    assert artifact.sequence_state(artifact.dump(digits)) is None
    assert Engine.from_weights(artifact.dump(digits), network.DEFAULT_ARCH, compile=False).sequence is None
    # Beside an int8 digit network the line reader keeps the floating precision auto would take.
    calibrated = artifact.dump(digits, torch.rand(16, 1, 28, 28), lines)
    int8 = Engine.from_weights(calibrated, network.DEFAULT_ARCH, compile=False, precision="int8")
    assert int8.int8 and int8.sequence is not None
    assert int8.sequence.bf16 == bf16_capable(torch.device("cpu"))
    broken = artifact.dump(digits, None, {"fc.weight": torch.zeros(3, 3)})
    with pytest.raises(ArtifactCorruptError, match="sequence network weights do not load"):
        Engine.from_weights(broken, network.DEFAULT_ARCH, compile=False)

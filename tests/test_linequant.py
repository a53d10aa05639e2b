"""The line reader in int8 (recognizer/linequant.py): calibration lines made from a version's
digits, a fixed set of shapes, the float reader for what int8 does not take, and ``auto``
taking int8 lines only where the digits serve int8 and the version's line agreement is
measured and high enough."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench.synth import STYLES, DigitPool, load_mnist, render_field
from recognizer import artifact, linequant, network, quantize
from recognizer.aot import Packages
from recognizer.aotbuild import build_all
from recognizer.engine import Engine
from recognizer.lines import HEIGHT, STRIDE, LineInput, line_input
from recognizer.sequence import SequenceReader, build


@pytest.fixture(scope="module")
def digits(mnist_root: Path) -> torch.Tensor:
    """Prepared-like [0, 1] training digits, as a version carries them for calibration."""
    images, _ = load_mnist(mnist_root, train=True)
    return quantize.calibration_sample(torch.from_numpy(images[:2000]).float()[:, None] / 255, 48)


@pytest.fixture(scope="module")
def lines(mnist_root: Path) -> list[LineInput]:
    images, labels = load_mnist(mnist_root, train=True)
    pool = DigitPool(images[:1000], labels[:1000])
    return [line_input(render_field(pool, (5, i), STYLES[k]).image) for k in ("free", "comb") for i in range(12)]


def test_calibration_lines_are_made_from_every_digit_like_served_lines(digits: torch.Tensor) -> None:
    made = linequant.calibration_lines(digits)
    # 48 digits cycle through fields of 3, 5 and 8 digits: three rounds of 16, three lines each.
    assert len(made) == 9
    assert all(line.x.shape[:2] == (1, HEIGHT) and line.width % STRIDE == 0 for line in made)
    assert all(line.width <= linequant.MAX_WIDTH for line in made)
    # Ink, not blank paper: the prepared lines span MNIST's normalised range.
    assert all(line.x.max() > 2.0 and line.x.min() < 0.0 for line in made)
    widths = [line.width for line in made[:3]]
    assert widths == sorted(widths) and widths[0] < widths[2]  # 3, 5, 8 digits: wider each time


def test_padding_gives_whole_width_steps_and_blank_rows(lines: list[LineInput]) -> None:
    x = linequant.padded(lines[:3], rows=linequant.BATCH)
    assert x.shape[0] == linequant.BATCH and x.shape[3] % linequant.WIDTH_STEP == 0
    assert torch.all(x[3:] == x[3, 0, 0, 0]) and x.shape[3] >= max(line.width for line in lines[:3])


class Recording:
    """Stands in for an int8 reader: answers what the float model would and records each shape."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.shapes = model, []  # type: ignore[var-annotated]

    takes = staticmethod(linequant.Int8Lines.takes)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        out: torch.Tensor = self.model(x)
        return out


def test_int8_takes_every_line_up_to_its_widest_in_batches_and_float_reads_the_rest(lines: list[LineInput]) -> None:
    torch.manual_seed(0)
    model = build().eval()
    wide = LineInput(
        np.concatenate([lines[0].x] * 8, axis=2), lines[0].clean, 0, 1.0, lines[0].to_original, lines[0].shape, "free"
    )
    assert wide.width > linequant.MAX_WIDTH
    batch = [*lines, wide]
    recording = Recording(model)
    mixed = SequenceReader(model, int8=recording)  # type: ignore[arg-type]
    got = mixed.log_probs(batch)
    # Every narrow line went through "int8", a whole batch at a time and at a compiled width.
    assert sum(rows for rows, *_ in recording.shapes) == len(lines)
    assert all(rows <= linequant.BATCH for rows, *_ in recording.shapes)
    assert all(shape[3] % linequant.WIDTH_STEP == 0 and shape[3] <= linequant.MAX_WIDTH for shape in recording.shapes)
    # Readings come back in the caller's order, whichever reader read them: the float reader's,
    # batched alike (a line's last frames see how far its batch is padded).
    want = SequenceReader(model, batch=linequant.BATCH).log_probs(batch)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want, strict=True))
    assert mixed.precision == "int8"


def test_the_reference_int8_arithmetic_stays_close_to_fp32(digits: torch.Tensor, lines: list[LineInput]) -> None:
    torch.manual_seed(0)
    model = build().eval()
    int8 = linequant.Int8Lines(model, digits, compile=False)
    x = linequant.padded(lines[:5])
    with torch.no_grad():
        exact, rounded = model(x), int8(x)
    assert rounded.shape == exact.shape
    # Untrained weights: the logits are small, so compare against their own spread.
    assert float((rounded - exact).abs().max()) < 0.25 * float(exact.std()) + 0.05


def test_auto_takes_int8_lines_only_with_int8_digits_and_measured_line_agreement(digits: torch.Tensor) -> None:
    torch.manual_seed(0)
    data = artifact.dump(network.build(), digits, build())
    good = linequant.LINE_INT8_MIN_AGREEMENT

    def lines_precision(precision: str, **kw: object) -> str:
        engine = Engine.from_weights(data, network.DEFAULT_ARCH, precision=precision, compile=False, **kw)
        assert engine.sequence is not None
        return engine.sequence.precision

    cpu = torch.device("cpu")
    assert linequant.wanted("int8", cpu, None)  # asked for: taken, as for the digits
    assert not linequant.wanted("auto", cpu, None)  # never measured: not taken on trust
    assert not linequant.wanted("auto", cpu, good - 0.001)
    assert linequant.wanted("auto", cpu, good) == quantize.int8_capable(cpu)
    assert not linequant.wanted("bf16", cpu, good)
    # Without compiling, int8 lines would run the slow reference arithmetic: never taken.
    assert lines_precision("int8", line_int8_agreement=good) != "int8"
    assert lines_precision("fp32", line_int8_agreement=good) == "fp32"


@pytest.mark.slow
def test_an_int8_engine_compiles_its_line_widths_and_reads_fields_as_float_does(
    digits: torch.Tensor, lines: list[LineInput], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two widths, not eight: each costs a compile of a few seconds, and one is like another.
    monkeypatch.setattr(linequant, "MAX_WIDTH", 2 * linequant.WIDTH_STEP)
    narrow = [line for line in lines if line.width <= linequant.MAX_WIDTH]
    assert len(narrow) >= 2
    torch.manual_seed(0)
    data = artifact.dump(network.build(), digits, build())
    engine = Engine.from_weights(data, network.DEFAULT_ARCH, precision="int8", buckets=(8,), line_int8_agreement=1.0)
    assert engine.sequence is not None and engine.sequence.precision != "int8"  # not before its widths compile
    engine.warm()
    assert engine.sequence.int8 is not None and "int8 line reader" in engine.describe()  # every width compiled
    reference = linequant.Int8Lines(engine.sequence.model, digits, compile=False)
    x = linequant.padded(narrow[:8])
    with torch.no_grad():
        compiled, eager = engine.sequence.int8(x), reference(x)
    # The compiled int8 kernels round like the reference arithmetic the trainer measures.
    assert float((compiled - eager).abs().max()) < 0.1 * float(eager.std()) + 0.05


def test_an_engine_whose_lines_cannot_be_quantised_reads_them_in_float(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    blank = torch.zeros(24, 1, 28, 28)  # calibration "digits" with no ink make no line
    data = artifact.dump(network.build(), blank, build())
    engine = Engine.from_weights(data, network.DEFAULT_ARCH, precision="int8", buckets=(8,), line_int8_agreement=1.0)
    assert engine.int8 and engine.sequence is not None and engine.sequence.precision != "int8"
    assert "no int8 line reader" in caplog.text and "reading lines in float" in caplog.text


def test_an_engine_handed_a_ready_int8_line_reader_serves_it_as_it_is(
    digits: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's compile beside its packages (worker/replica.py) hands over the int8 line reader
    the start made ready: compiled again from that thread, its widths ran 3.7x slower."""
    torch.manual_seed(0)
    data = artifact.dump(network.build(), digits, build())
    ready: Any = Warming(fails=False)  # stands in for an Int8Lines

    def refuse(*_: object) -> None:
        raise AssertionError("the engine made its own int8 line reader")

    monkeypatch.setattr(linequant, "int8_lines", refuse)
    engine = Engine.from_weights(
        data, network.DEFAULT_ARCH, precision="int8", buckets=(4,), line_int8_agreement=1.0, int8_lines=ready
    )
    assert engine.sequence is not None
    if quantize.int8_capable(torch.device("cpu")):
        assert engine.sequence.int8 is ready and engine.int8_lines is ready
    else:  # no int8 here: lines are float, and the handed reader is not used
        assert engine.sequence.int8 is None


class Warming:
    """Stands in for an int8 reader at warm-up: compiles (or fails to) instantly."""

    def __init__(self, fails: bool) -> None:
        self.fails = fails

    @staticmethod
    def widths() -> range:
        return linequant.Int8Lines.widths()

    def warm(self) -> None:
        if self.fails:
            raise RuntimeError("inductor said no")


@pytest.mark.parametrize("fails", [False, True])
def test_a_reader_takes_its_int8_copy_only_once_it_has_compiled(fails: bool, caplog: pytest.LogCaptureFixture) -> None:
    reader, int8 = SequenceReader(build()), Warming(fails)
    linequant.adopt(int8, reader)  # type: ignore[arg-type]
    assert (reader.int8 is None) == fails
    assert ("reading lines in float" in caplog.text) == fails


@pytest.mark.slow
def test_an_int8_start_loads_digits_and_lines_from_packages_without_quantising(
    digits: torch.Tensor, lines: list[LineInput], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(linequant, "MAX_WIDTH", 2 * linequant.WIDTH_STEP)  # two widths: as above
    torch.manual_seed(0)
    data = artifact.dump(network.build(), digits, build())
    packages = Packages(tmp_path, hashlib.sha256(data).hexdigest(), dict(network.DEFAULT_ARCH))

    def start() -> Engine:
        return Engine.from_weights(
            data, network.DEFAULT_ARCH, precision="int8", buckets=(4,), cache_dir=tmp_path, packages=packages
        )

    first = start()  # nothing built yet: both parts compile, and the worker would build both
    assert first.source == "compiled" and first.compiled_parts() == ["digits", "lines"]
    # What the background build does (recognizer/aotbuild.py), in this process.
    with packages.lock() as mine:
        assert mine
        build_all(
            packages,
            Engine.from_weights(data, network.DEFAULT_ARCH, precision="int8", buckets=(4,), compile=False),
            digits,
            lines=True,
        )
    second = start()
    assert second.source == "aot" and second.compiled_parts() == []
    assert second._model is None, "a start from packages quantised the digit network"
    second.warm()
    assert second.sequence is not None and second.sequence.int8 is not None
    assert second.sequence.int8.source == "aot" and second.sequence.int8._model is None
    # The packages compute what the reference int8 arithmetic does, digits and lines.
    x = torch.rand(4, 1, 28, 28)
    reference = Engine.from_weights(data, network.DEFAULT_ARCH, precision="int8", buckets=(4,), compile=False)
    assert float((second.logits(x) - reference.logits(x)).abs().max()) < 0.1 * float(reference.logits(x).std()) + 0.05
    narrow = linequant.padded([line for line in lines if line.width <= linequant.MAX_WIDTH][:8])
    eager = linequant.Int8Lines(second.sequence.model, digits, compile=False)
    with torch.no_grad():
        got, want = second.sequence.int8(narrow), eager(narrow)
    assert float((got - want).abs().max()) < 0.1 * float(want.std()) + 0.05
    # A compile beside the packages (worker/upgrade.py) compiles the digits; lines stay on packages.
    beside = Engine.from_weights(
        data, network.DEFAULT_ARCH, precision="int8", buckets=(4,), packages=packages, aot_digits=False
    )
    assert beside.source == "compiled" and beside.int8_lines is not None and beside.int8_lines.source == "aot"
    # int8 packages serve no float engine: another precision compiles.
    assert (
        Engine.from_weights(data, network.DEFAULT_ARCH, precision="fp32", buckets=(4,), packages=packages).source
        == "compiled"
    )

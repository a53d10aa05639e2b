"""The line reader in int8, where the digit network serves int8 (recognizer/quantize.py).

On a 2-core AVX512-VNNI CPU the int8 line reader takes 1.32 ms a line against 2.39 ms for the
bf16 autocast it replaces (``python -m bench.linemodel``), and a field's networks 3.1 ms against
5.3 (``python -m bench.fieldprep``). Two things differ from the digit network's int8:

- **Fixed shapes.** Lines vary in width, and inductor's int8 convolutions compile only for
  static shapes (a dynamic batch or width fails in torch 2.14 / torchao 0.18). The model is
  quantised once with a dynamic width and compiled for ``BATCH`` lines of each multiple of
  ``WIDTH_STEP`` columns up to ``MAX_WIDTH`` (``warm`` compiles them all: about 2 s a width,
  16 s more for a worker to start, as inductor caches no frozen int8 graph; once a worker has
  built the version's AOT packages, one per width, a start loads them instead and neither
  quantises nor compiles); a chunk is padded
  with blank lines to ``BATCH``, and a line wider than ``MAX_WIDTH`` (beyond the 12-digit
  fields of the validation set) is read by the float reader.
- **Calibration lines made from the version's digits.** The observers need lines, and a version
  carries 256 prepared training digits for the digit network's calibration. They are written
  side by side on a blank page, ``DIGITS_PER_LINE`` to a field, and prepared by ``line_input``
  like any served crop, so every version trained by this code can be quantised.

The trainer measures how often the int8 reader reads a held-out field as fp32 does
(``trainer.seqpublish.line_agreement``, recorded as ``line_int8_agreement``); ``auto`` serves int8 lines only
where that is at least ``LINE_INT8_MIN_AGREEMENT``.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from recognizer import quantize
from recognizer.aot import LINES, PackageKey, Packages
from recognizer.lines import HEIGHT, PAPER, LineInput, line_input

if TYPE_CHECKING:  # recognizer.sequence imports this module
    from recognizer.sequence import SequenceReader

__all__ = [
    "BATCH",
    "LINE_INT8_MIN_AGREEMENT",
    "MAX_WIDTH",
    "WIDTH_STEP",
    "Int8Lines",
    "adopt",
    "calibration_lines",
    "int8_lines",
    "padded",
    "wanted",
]

log = logging.getLogger(__name__)

BATCH = 8  # lines per int8 call: 1.5 ms a line at 5 lines against 1.4 at 32, so little is lost padding
WIDTH_STEP = 32  # the float reader pads a batch to this too: int8 compiles MAX_WIDTH / WIDTH_STEP shapes
MAX_WIDTH = 256  # 12 handwritten digits measure about 250 columns; wider lines read in float
# "auto" takes int8 lines only where at most one held-out field line in 1,000 reads differently
# from fp32 (issue 12's bar for int8 digits: 99.9% agreement). A briefly trained line reader
# agreed on 98.7% of 600 and lost 1-2 exact fields of 300 per kind (BENCHMARKS.md, "The line
# reader in int8"): below the bar, so there it is int8 only when asked for.
LINE_INT8_MIN_AGREEMENT = 0.999
DIGITS_PER_LINE = (3, 5, 8)  # calibration fields cycle through these lengths, as served fields vary
_GAP = 4  # page pixels between calibration digits: neighbours close, never touching


def wanted(precision: str, device: torch.device, agreement: float | None) -> bool:
    """Whether an engine whose digits serve int8 reads lines in int8 too: asked for (``int8``),
    or ``auto`` on int8 hardware with the version's line agreement measured high enough."""
    return quantize.use_int8(precision, device, calibrated=True, agreement=agreement, minimum=LINE_INT8_MIN_AGREEMENT)


def int8_lines(
    model: nn.Module, calibration: torch.Tensor | None, packages: Packages | None = None
) -> Int8Lines | None:
    """The int8 copy an engine serves (from the version's AOT ``packages`` when every width has
    one), or None (with a warning) when none can be built: fields are then read in float, never
    refused."""
    if calibration is None:
        return None
    try:
        return Int8Lines(model, calibration, packages=packages)
    except Exception as exc:
        log.warning("no int8 line reader (%s); reading lines in float", f"{type(exc).__name__}: {exc}"[:300])
        return None


def adopt(int8: Int8Lines, reader: SequenceReader) -> None:
    """Compile ``int8``'s widths, then have ``reader`` read with it; if compiling fails, the
    reader stays in float."""
    began = time.perf_counter()
    try:
        int8.warm()
        reader.int8 = int8
        log.info("int8 line reader ready (%d widths in %.1f s)", len(int8.widths()), time.perf_counter() - began)
    except Exception as exc:
        log.warning("the int8 line reader failed to compile (%s); reading lines in float", f"{exc}"[:300])


def calibration_lines(digits: torch.Tensor) -> list[LineInput]:
    """Lines prepared from ``digits`` (N, 1, 28, 28; prepared [0, 1], ink bright) written in a
    row on white paper, as a scanner would give them; every digit is used once."""
    ink = (digits.detach().cpu().float().clamp(0, 1)[:, 0].numpy() * 255).round().astype(np.uint8)
    lines, start, n = [], 0, 0
    while start < len(ink):
        count = DIGITS_PER_LINE[n % len(DIGITS_PER_LINE)]
        row = ink[start : start + count]
        page = np.zeros((28 + 2 * 8, len(row) * (28 + _GAP) + 16), np.uint8)
        for i, digit in enumerate(row):
            page[8:36, 8 + i * (28 + _GAP) : 36 + i * (28 + _GAP)] = digit
        try:
            lines.append(line_input(np.repeat((255 - page)[..., None], 3, axis=2)))
        except Exception as exc:  # a blank calibration digit is no reason to serve float
            log.debug("calibration line %d skipped: %s", n, exc)
        start, n = start + count, n + 1
    return lines


def padded(
    lines: Sequence[LineInput], rows: int | None = None, step: int = WIDTH_STEP, width: int | None = None
) -> torch.Tensor:
    """``lines`` in one batch: ``rows`` rows (blank ones after the lines), the width rounded up
    to a multiple of ``step`` (or ``width``, longer lines cut short), padded with blank paper."""
    width = width or step * math.ceil(max(line.width for line in lines) / step)
    x = np.full((rows or len(lines), 1, HEIGHT, width), PAPER, np.float32)
    for row, line in enumerate(lines):
        x[row, :, :, : min(width, line.width)] = line.x[:, :, :width]
    return torch.from_numpy(x)


def quantize_lines(model: nn.Module, lines: Sequence[LineInput]) -> nn.Module:
    """An int8 copy of the line reader (PT2E, x86 Inductor quantizer), exported with a dynamic
    width in whole ``WIDTH_STEP``s and calibrated on ``lines``; its output stays float32."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    steps = torch.export.Dim("steps", min=1, max=MAX_WIDTH // WIDTH_STEP)
    example = torch.full((BATCH, 1, HEIGHT, MAX_WIDTH), PAPER)
    # strict=True for the quantizer's conv-add-relu patterns (recognizer/quantize.py says why).
    # A copy in the default layout: the served float reader is channels-last, and quantising
    # must give the same graph whether it runs before or after that.
    model = copy.deepcopy(model).eval().float().to(memory_format=torch.contiguous_format)
    exported = torch.export.export(model, (example,), dynamic_shapes=({3: WIDTH_STEP * steps},), strict=True).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for start in range(0, len(lines), BATCH):
            prepared(padded(lines[start : start + BATCH], BATCH)[..., :MAX_WIDTH])  # int8 reads no wider
    converted: nn.Module = convert_pt2e(prepared)
    return converted


class Int8Lines:
    """A line reader's int8 copy, for one shape per width: logits for ``BATCH`` lines at a time.
    Loaded from the version's AOT ``packages`` when every width has one (no quantising, no
    compiling: ``source`` "aot"), else quantised and compiled width by width in ``warm``
    ("compiled"). ``compile=False`` runs the reference int8 arithmetic eagerly (the trainer's
    agreement check: same rounding, no compile)."""

    def __init__(
        self, model: nn.Module, calibration: torch.Tensor, *, compile: bool = True, packages: Packages | None = None
    ) -> None:
        self._float_model, self._calibration = model, calibration
        self._model: nn.Module | None = None
        aot = packages.load([self.package_key(packages, w) for w in self.widths()]) if packages else None
        if aot is not None:
            self._forward: Callable[[torch.Tensor], torch.Tensor] = aot
            self.source = "aot"
        else:
            # dynamic=False: each width compiles its own static graph (dynamic ones fail, see above).
            self._forward = torch.compile(self.model, dynamic=False) if compile else self._eager
            self.source = "compiled" if compile else "eager"

    @property
    def model(self) -> nn.Module:
        """The quantised module (quantised on first use: a copy loaded from packages never is)."""
        if self._model is None:
            lines = calibration_lines(self._calibration)
            if not lines:
                raise ValueError("no calibration line could be made from the version's calibration images")
            self._model = quantize_lines(self._float_model, lines)
        return self._model

    def _eager(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out

    @staticmethod
    def package_key(packages: Packages, width: int) -> PackageKey:
        """The key of the AOT package for one width."""
        return packages.key(LINES, (BATCH, 1, HEIGHT, width), "int8", torch.device("cpu"))

    @staticmethod
    def widths() -> range:
        return range(WIDTH_STEP, MAX_WIDTH + 1, WIDTH_STEP)

    @staticmethod
    def takes(width: int) -> bool:
        """Whether int8 reads a line this wide (wider ones: the float reader)."""
        return width <= MAX_WIDTH

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, T, 11) for N <= BATCH lines padded to a width of whole ``WIDTH_STEP``s."""
        n = len(x)
        if n < BATCH:
            x = torch.cat([x, x.new_full((BATCH - n, *x.shape[1:]), PAPER)])
        out: torch.Tensor = self._forward(x)
        return out[:n]

    def warm(self) -> None:
        """Run every width once, so no request pays for a compile (a few seconds each on a CPU;
        milliseconds for packages)."""
        for width in self.widths():
            self(torch.full((BATCH, 1, HEIGHT, width), PAPER))

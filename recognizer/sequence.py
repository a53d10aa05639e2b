"""Read a field as one sequence: a ResNet18 trunk that keeps the width axis, with a CTC head.

The other route to a field (recognizer.fields) cuts characters apart and reads each one; touching
or overlapping neighbours defeat straight cuts. Here the whole line goes through the network at
once and a CTC head emits, for every 4-pixel column of the line, a digit or "blank"; the reading
is the best path with repeats merged and blanks dropped, so no cut is ever decided.

  1. the same ink maps, levelling and printed-rule removal as the segmenting reader;
  2. the remaining ink scaled so characters stand ``TEXT`` pixels tall in a ``HEIGHT``-pixel line;
  3. the trunk: torchvision's ResNet18 with the default one-channel stem, whose last two stages
     halve height but not width, averaged over height: one frame per 4 columns of the line;
  4. greedy CTC decoding; each character's confidence, top 3 and box come from its frames.

    lines = [line_input(crop) for crop in crops]     # LineInput, or raises ImageError
    readings = decode(model_logits, lines)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn

from config.errors import ArtifactCorruptError, ImageDecodeError, ImageError
from recognizer.fields import Box, CharReading, FieldReading, ink_box
from recognizer.ink import FAINT
from recognizer.linequant import BATCH, Int8Lines, padded
from recognizer.lines import HEIGHT, STRIDE, LineInput, frames, line_from, line_input

__all__ = [
    "BLANK",
    "HEIGHT",
    "SEQ_ARCH",
    "STRIDE",
    "LineInput",
    "SequenceNet",
    "SequenceReader",
    "best_path",
    "build",
    "decode",
    "frames",
    "line_from",
    "line_input",
    "sequence_reader",
]

BLANK = 10  # CTC's blank; classes 0-9 are the digits themselves
SEQ_ARCH: dict[str, Any] = {"name": "resnet18-ctc", "stem": "conv3x3", "in_channels": 1, "num_classes": BLANK + 1}


class SequenceNet(nn.Module):
    """ResNet18 through stage 3, which strides over height only: (N, 1, 24, W) -> (N, W/4, 11)."""

    def __init__(self, num_classes: int = BLANK + 1) -> None:
        super().__init__()
        trunk = torchvision.models.resnet18()
        trunk.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
        block = trunk.layer3[0]
        block.conv1.stride = (2, 1)
        block.downsample[0].stride = (2, 1)
        self.conv1, self.bn1, self.relu, self.maxpool = trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool
        self.layer1, self.layer2, self.layer3 = trunk.layer1, trunk.layer2, trunk.layer3
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        out: torch.Tensor = self.fc(x.mean(dim=2).transpose(1, 2))  # (N, T, classes)
        return out


def build(arch: dict[str, Any] | None = None) -> SequenceNet:
    arch = {**SEQ_ARCH, **(arch or {})}
    if arch["name"] != SEQ_ARCH["name"]:
        raise ValueError(f"not a sequence architecture: {arch['name']!r}")
    return SequenceNet(int(arch["num_classes"]))


def _char_box(line: LineInput, t0: int, t1: int) -> Box:
    """The ink under frames t0..t1-1, boxed in the crop's pixels."""
    c0 = max(0, line.left + math.floor(t0 * STRIDE / line.scale))
    c1 = min(line.clean.shape[1], max(line.left + math.ceil(t1 * STRIDE / line.scale), c0 + 1))
    ys, xs = np.nonzero(line.clean[:, c0:c1] > FAINT)
    if len(ys) == 0:  # a character read from ink too faint to box: its columns, full height
        ys, xs = np.array([0, line.clean.shape[0] - 1]), np.array([0, c1 - c0 - 1])
    return ink_box(line.to_original, line.shape, ys, xs + c0, 0)


def best_path(path: Sequence[int]) -> list[tuple[int, int, int]]:
    """The characters of a best path (a class per frame): (digit, first frame, end frame) of
    each run of one digit; blanks separate characters, repeats within a run merge."""
    out = []
    t = 0
    while t < len(path):
        end = t
        while end < len(path) and path[end] == path[t]:
            end += 1
        if path[t] != BLANK:
            out.append((int(path[t]), t, end))
        t = end
    return out


def decode(log_probs: torch.Tensor, line: LineInput) -> FieldReading:
    """The best path through one line's frames (T, 11 log-probabilities, padding frames cut off):
    each run of one digit is a character; its confidence is its peak frame's probability, its
    top 3 that frame's digits renormalised without the blank, its box the ink nearest its peak."""
    probs = log_probs[: frames(line.width)].float().exp()
    runs = best_path(probs.argmax(dim=1).tolist())
    peaks = [t + int(probs[t:end, k].argmax()) for k, t, end in runs]
    # A character owns the columns closer to its peak than to its neighbours' (CTC's runs are
    # narrower than the ink): the box is the ink there.
    bounds = [0] + [(a + b + 1) // 2 for a, b in itertools.pairwise(peaks)] + [len(probs)]
    chars: list[CharReading] = []
    for i, ((k, _, _), peak) in enumerate(zip(runs, peaks, strict=True)):
        digits = probs[peak, :BLANK] / probs[peak, :BLANK].sum().clamp_min(1e-12)
        conf, labels = digits.topk(3)
        top3 = [(int(a), float(b)) for a, b in zip(labels.tolist(), conf.tolist(), strict=True)]
        chars.append(CharReading(k, float(probs[peak, k]), top3, _char_box(line, bounds[i], bounds[i + 1])))
    confidence = math.prod(c.confidence for c in chars) if chars else 0.0
    return FieldReading("".join(str(c.label) for c in chars), chars, confidence, line.layout, "sequence")


class SequenceReader:
    """A sequence network serving field crops: lines of similar width share a batch, padded to a
    multiple of ``pad_to`` columns so few distinct shapes are ever run. Eager: lines vary in
    width, and compiling fp32 for one width gained 1.07x over this (``python -m bench.linemodel``).
    Channels-last everywhere (1.43x the default layout in fp32 on a 2-core AVX2 CPU); ``bf16``:
    under bfloat16 autocast, where the digit engine serves bf16 (2.3 times as fast on a 2-core
    AVX512-BF16 CPU). ``int8``: an int8 copy (recognizer/linequant.py) that reads, ``BATCH``
    lines at a time, every line it takes; the float model reads the rest."""

    def __init__(
        self,
        model: nn.Module,
        *,
        batch: int = 32,
        pad_to: int = 32,
        bf16: bool = False,
        int8: Int8Lines | None = None,
    ) -> None:
        self.model = model.eval()
        self.batch = batch
        self.pad_to = pad_to
        self.bf16 = bf16
        self.int8 = int8
        self.device = next(model.parameters()).device

    def to(self, device: torch.device, *, bf16: bool = False, int8: Int8Lines | None = None) -> SequenceReader:
        model = self.model.to(device).to(memory_format=torch.channels_last)
        return SequenceReader(model, batch=self.batch, pad_to=self.pad_to, bf16=bf16, int8=int8)

    @property
    def precision(self) -> str:
        return "int8" if self.int8 is not None else "bf16" if self.bf16 else "fp32"

    @torch.no_grad()
    def log_probs(self, lines: list[LineInput]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = [torch.empty(0)] * len(lines)
        order = sorted(range(len(lines)), key=lambda i: lines[i].width)
        int8 = self.int8
        # Sorted by width, the lines int8 takes come first: int8 reads them BATCH at a time.
        narrow = sum(int8 is not None and int8.takes(line.width) for line in lines)
        chunks = [order[s : s + BATCH] for s in range(0, narrow, BATCH)]
        chunks += [order[s : s + self.batch] for s in range(narrow, len(order), self.batch)]
        for idx in chunks:
            chunk = [lines[i] for i in idx]
            if int8 is not None and int8.takes(max(line.width for line in chunk)):
                logits = int8(padded(chunk))
            else:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    logits = self.model(padded(chunk, step=self.pad_to).to(self.device))
            scores = logits.float().log_softmax(-1).cpu()
            for row, i in enumerate(idx):
                out[i] = scores[row]
        return out

    def read(self, images: Sequence[np.ndarray]) -> list[FieldReading | ImageError]:
        """Each crop's reading, or the ``ImageError`` that says why it has none."""
        lines: list[LineInput | ImageError] = []
        for image in images:
            try:
                lines.append(line_input(image))
            except ImageError as exc:
                lines.append(exc)
            except Exception as exc:  # a crop no one foresaw fails alone, with its cause named
                lines.append(ImageDecodeError(f"field could not be prepared ({type(exc).__name__}: {exc})"[:300]))
        good = [line for line in lines if isinstance(line, LineInput)]
        scores = iter(self.log_probs(good))
        return [line if isinstance(line, ImageError) else decode(next(scores), line) for line in lines]


def sequence_reader(state: dict[str, torch.Tensor] | None) -> SequenceReader | None:
    """A reader for a version's stored sequence weights (``artifact.sequence_state``); None for none."""
    if state is None:
        return None
    model = build()
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ArtifactCorruptError(f"sequence network weights do not load: {exc}") from exc
    return SequenceReader(model)

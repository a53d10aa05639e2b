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
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torchvision
from torch import nn

from config.errors import ArtifactCorruptError, ImageDecodeError, ImageError
from recognizer import scan
from recognizer.fields import (
    Box,
    CharReading,
    FieldReading,
    Handwriting,
    handwriting,
    ink_box,
)
from recognizer.ink import FAINT
from recognizer.segment import text_height

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

HEIGHT = 24  # the line's height in pixels: the network's input is (1, HEIGHT, W)
TEXT = 15  # a character's height in the line: as small as reads well, since the cost grows with the square
MARGIN = 4  # blank columns left and right of the ink, so the first and last frames see paper
STRIDE = 4  # columns of the line per output frame
BLANK = 10  # CTC's blank; classes 0-9 are the digits themselves
MAX_PIXELS = 4_000_000
SEQ_ARCH: dict[str, Any] = {"name": "resnet18-ctc", "stem": "conv3x3", "in_channels": 1, "num_classes": BLANK + 1}
PAPER = float((0.0 - scan.MNIST_MEAN) / scan.MNIST_STD)  # a normalised blank pixel: pad with this


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


def frames(width: int) -> int:
    """Output frames for a line ``width`` columns wide."""
    return math.ceil(width / STRIDE)


@dataclass(frozen=True)
class LineInput:
    """A field crop as the network's input, and what it takes to map frames back to the crop."""

    x: np.ndarray  # float32 (1, HEIGHT, W), normalised like MNIST, W a multiple of STRIDE
    clean: np.ndarray  # the levelled, rule-free ink the line was cut from
    left: int  # the ink's first column in ``clean``
    scale: float  # line pixels per ``clean`` pixel
    to_original: np.ndarray  # 2x3 affine map from ``clean``'s pixels to the crop's
    shape: tuple[int, int]  # the crop's (H, W)
    layout: str

    @property
    def width(self) -> int:
        return int(self.x.shape[2])


def line_input(image: np.ndarray, max_pixels: int = MAX_PIXELS) -> LineInput:
    """The crop's handwriting as one normalised line; raises ``ImageError`` when there is none."""
    return line_from(handwriting(image, max_pixels))


def line_from(found: Handwriting) -> LineInput:
    """A crop's ``handwriting`` as one normalised line."""
    ink, frame, clean, blobs = found
    # Keep the blobs and the faint rim around them; specks of noise below the solid level go.
    mask = np.zeros(clean.shape, np.uint8)
    for by, bx in blobs:
        mask[by, bx] = 1
    rim = cv2.dilate(mask, np.ones((5, 5), np.uint8)).astype(bool)
    ink_only = np.where(rim, clean, 0.0).astype(np.float32)
    all_y = np.concatenate([b[0] for b in blobs])
    all_x = np.concatenate([b[1] for b in blobs])
    y0, y1, x0, x1 = int(all_y.min()), int(all_y.max()) + 1, int(all_x.min()), int(all_x.max()) + 1
    scale = min(TEXT / text_height(blobs), (HEIGHT - 2) / (y1 - y0))
    crop = ink_only[y0:y1, x0:x1]
    w, h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    small = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    width = STRIDE * math.ceil((w + 2 * MARGIN) / STRIDE)
    line = np.zeros((HEIGHT, width), np.float32)
    top = (HEIGHT - h) // 2
    line[top : top + h, MARGIN : MARGIN + w] = np.clip(small, 0.0, 1.0)
    return LineInput(
        scan.normalize(line), clean, x0 - round(MARGIN / scale), scale, ink.to_original, ink.shape, frame.kind
    )


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
    width, and one compile per width would cost more than it saves. ``bf16``: under bfloat16
    autocast, channels-last, where the digit engine serves bf16 (2.3 times as fast on a 2-core
    AVX512-BF16 CPU)."""

    def __init__(self, model: nn.Module, *, batch: int = 32, pad_to: int = 32, bf16: bool = False) -> None:
        self.model = model.eval()
        self.batch = batch
        self.pad_to = pad_to
        self.bf16 = bf16
        self.device = next(model.parameters()).device

    def to(self, device: torch.device, *, bf16: bool = False) -> SequenceReader:
        model = self.model.to(device)
        if bf16 or device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return SequenceReader(model, batch=self.batch, pad_to=self.pad_to, bf16=bf16)

    @torch.no_grad()
    def log_probs(self, lines: list[LineInput]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = [torch.empty(0)] * len(lines)
        order = sorted(range(len(lines)), key=lambda i: lines[i].width)
        for start in range(0, len(order), self.batch):
            idx = order[start : start + self.batch]
            width = self.pad_to * math.ceil(max(lines[i].width for i in idx) / self.pad_to)
            x = np.full((len(idx), 1, HEIGHT, width), PAPER, np.float32)
            for row, i in enumerate(idx):
                x[row, :, :, : lines[i].width] = lines[i].x
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.model(torch.from_numpy(x).to(self.device))
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

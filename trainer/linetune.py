"""A retrain's line-reader half: the version's sequence network learns from labelled fields.

Free fields are served by the line reader (recognizer.layout), so a person's correction of one
teaches nothing while only the digit network learns from the field's aligned cuts. Here the
labelled fields, read as whole lines with the text a person gave, fine-tune a copy of the line
reader, mixed with generated lines from training digits so that it does not forget; no cut has
to align, so every labelled field counts.

  1. the labelled fields prepared as lines (``line_input``), split as the labels are (held out by
     content hash);
  2. replay: ``REPLAY_PER_FIELD`` generated lines per labelled one (training digits outside the
     kept-out ones);
  3. a short fine-tune (``INKQ_RETRAIN_LINE_STEPS`` AdamW steps, one-cycle);
  4. the pull back towards the parent (as the digit half does, WiSE-FT): the largest mixing
     weight whose reading of generated free fields loses at most ``GUARD_TOLERANCE``. A new
     style is learned in a few steps, and so is forgetting the old ones: 0% -> 51% on held-out
     outlined fields cost 8 points on ordinary ones unmixed;
  5. the gate: the new reader must read more held-out labelled fields exactly, and lose at most
     ``GUARD_TOLERANCE`` on other generated free fields from digits no reader trained on.
Adopted, it goes into the retrain's version; otherwise the parent's reader stays, with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.synth import STYLES, render_field
from config.errors import ImageError
from config.settings import Settings
from recognizer import artifact
from recognizer.decoding import decode_colour
from recognizer.sequence import build, line_input
from storage.labels import Labels, Sample
from trainer import sequence
from trainer.mixing import pull_back
from trainer.seqpublish import gate_pool

__all__ = ["GUARD_TOLERANCE", "LineOutcome", "labelled_lines", "line_half", "tune_lines"]

log = logging.getLogger(__name__)

BATCH = 16  # lines per step; INKQ_RETRAIN_LINE_STEPS steps (120: about 40 s on 2 CPU cores)
LEARNING_RATE = 3e-4  # a third of training's peak: the reader already reads; it adapts
REPLAY_PER_FIELD = 6  # generated lines per labelled field, so the reader does not forget
MIN_REPLAY = 200
GUARD_FIELDS = 200  # generated free fields from kept-out digits: the reader must not get worse there
GUARD_SEED = 41  # distinct from the publish gate's and the benchmark's field seeds
SELECT_SEED = 43  # the fields the mixing weight is chosen on: never the guard's
GUARD_TOLERANCE = 2.0  # points of exact generated free fields a candidate may lose (four fields of 200)
KEPT_OUT = 1000  # training digits `python -m trainer.sequence` keeps out of its fields (its --val-size)


@dataclass
class LineOutcome:
    """What the line-reader half decided, for the retrain's summary and version."""

    adopted: bool
    reason: str  # empty when there was nothing to try: no line reader, or no labelled field
    state: dict[str, torch.Tensor] | None = None  # the tuned reader's weights when adopted
    figures: dict[str, float] = field(default_factory=dict)


def _as_line(data: bytes, settings: Settings) -> tuple[np.ndarray, str]:
    crop = decode_colour(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    line = line_input(crop, settings.max_image_pixels)
    return sequence.as_ink(line), line.layout


def labelled_lines(labels: Labels, samples: list[Sample], settings: Settings) -> sequence.Lines:
    """The labelled fields among ``samples`` as training lines; unreadable ones are skipped."""
    fields = [s for s in samples if s.text is not None]
    out = sequence.Lines([], [], [])
    for sample, data in zip(fields, labels.images([s.digest for s in fields]), strict=True):
        if data is None or sample.text is None:
            continue
        try:
            ink, layout = _as_line(data, settings)
        except ImageError as exc:
            log.warning("labelled field %s skipped for the line reader: %s", sample.digest[:12], exc)
            continue
        out.ink.append(ink)
        out.texts.append(sample.text)
        out.kinds.append(layout)
    return out


def _exact(model: torch.nn.Module, lines: sequence.Lines) -> float:
    """Exact readings, in percent of all lines."""
    if not lines.texts:
        return float("nan")
    by_kind = sequence.evaluate(model, lines)  # type: ignore[arg-type]
    counts = {k: lines.kinds.count(k) for k in set(lines.kinds)}
    return sum(by_kind[k] * counts[k] for k in counts) / len(lines.texts)


def _generated(root: Path, seed: int) -> sequence.Lines:
    """Generated free fields from training digits that neither network trained on, as lines."""
    pool = gate_pool(root, KEPT_OUT)
    out = sequence.Lines([], [], [])
    for i in range(GUARD_FIELDS):
        f = render_field(pool, (seed, i), STYLES["free"])
        out.ink.append(sequence.as_ink(line_input(f.image)))
        out.texts.append(f.text)
        out.kinds.append("free")
    return out


def _mixed(new: sequence.Lines, replay: sequence.Lines) -> sequence.Lines:
    return sequence.Lines(new.ink + replay.ink, new.texts + replay.texts, new.kinds + replay.kinds)


def tune_lines(
    settings: Settings, parent: dict[str, torch.Tensor], new: sequence.Lines, held: sequence.Lines, seed: int
) -> LineOutcome:
    """Fine-tune a copy of the parent's line reader on ``new`` (with replay); adopted only if it
    reads more of ``held`` exactly and holds up on the guard fields."""
    if not new.texts:
        return LineOutcome(False, "no labelled fields to learn from")
    if not held.texts:
        return LineOutcome(False, "no held-out labelled fields to judge the line reader by: label more fields")
    root = settings.path("data_root")
    model = build()
    model.load_state_dict(parent)
    guard, select = _generated(root, GUARD_SEED), _generated(root, SELECT_SEED)
    before = {"held": _exact(model, held), "guard": _exact(model, guard)}
    floor = _exact(model, select) - GUARD_TOLERANCE
    replay = sequence.generate(
        sequence.digit_pool(root, KEPT_OUT), max(MIN_REPLAY, REPLAY_PER_FIELD * len(new.texts)), seed
    )
    mixed = _mixed(new, replay)
    torch.manual_seed(seed)
    steps = settings.retrain_line_steps
    epochs = steps * BATCH / len(mixed.texts)  # a fixed number of steps, however many lines
    sequence.train(model, mixed, epochs, batch=BATCH, lr=LEARNING_RATE, max_steps=steps, seed=seed)
    mix = pull_back(model, parent, lambda m: _exact(m, select), floor)
    after = {"held": _exact(model, held), "guard": _exact(model, guard)}
    figures = {f"{k}_{when}": round(v, 2) for when, d in (("before", before), ("after", after)) for k, v in d.items()}
    figures["mix"] = mix
    said = (
        f"held-out labelled fields {before['held']:.1f}% -> {after['held']:.1f}% exact, "
        f"generated free fields {before['guard']:.1f}% -> {after['guard']:.1f}%"
    )
    if after["held"] <= before["held"]:
        return LineOutcome(False, f"line reader not better: {said}", figures=figures)
    if before["guard"] - after["guard"] > GUARD_TOLERANCE:
        return LineOutcome(False, f"line reader worse on generated fields: {said}", figures=figures)
    tuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return LineOutcome(True, f"line reader: {said}", tuned, figures)


def line_half(
    settings: Settings,
    labels: Labels,
    parent_weights: bytes,
    train: list[Sample],
    held: list[Sample],
    seed: int,
) -> LineOutcome:
    """The line-reader half of a retrain: tried when the parent has a line reader and fields were labelled."""
    parent = artifact.sequence_state(parent_weights)
    if parent is None or not settings.retrain_line_steps or not any(s.text is not None for s in train):
        return LineOutcome(False, "")
    return tune_lines(
        settings, parent, labelled_lines(labels, train, settings), labelled_lines(labels, held, settings), seed
    )

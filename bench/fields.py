"""`python -m bench.fields`: how well and how fast the field reader reads generated fields.

    python -m bench.fields --split val --count 200     # fields from MNIST training digits: tuning
    python -m bench.fields --split test --count 300    # fields from MNIST test digits: reported figures

Reports 5-digit comb-box fields read exactly; free 3-8-digit strings (touching neighbours
included) read exactly and per character; single digits in a printed box against the same
digits (same samples, same strokes) without one; the reader's fields/s and characters/s beside
single digits/s through the same engine. The model is the registry's current version
(``--model registry``) or one trained here on MNIST training digits (``--model train``, cached).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import numpy as np

from bench.fieldmodel import TrainedModel, engine_from, from_file, train_or_load
from bench.synth import STYLES, Box, DigitPool, Field, load_mnist, render_field
from bench.synth.fieldset import tile_sheet
from config.errors import ImageError
from config.settings import Settings
from recognizer import scan
from recognizer.engine import Engine
from recognizer.fields import FieldReading, ReaderParams, read_fields
from recognizer.layout import read_by_layout
from worker.fieldwork import field_result
from worker.results import Served

__all__ = ["Reader", "char_errors", "flagged", "main", "measure", "reading_sheet", "segmented", "segmenting"]

# Validation and test fields never share seeds, whatever their digits.
SEEDS = {"val": 1009, "test": 2003}
CHUNK = 32  # fields per read_fields call, as a worker batch would hold
REVIEW_THRESHOLD = Settings().review_threshold  # the default: what a worker marks for review


def char_errors(truth: str, read: str) -> int:
    """Edit distance: a character missed, added or misread counts one."""
    prev = list(range(len(read) + 1))
    for i, a in enumerate(truth, 1):
        cur = [i]
        for j, b in enumerate(read, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b)))
        prev = cur
    return prev[-1]


Reader = Callable[[list[np.ndarray]], "list[FieldReading | ImageError]"]


def segmenting(engine: Engine, params: ReaderParams | None = None) -> Reader:
    """Segmentation then recognition: recognizer.fields with the serving engine."""
    return lambda images: read_fields(images, engine, params or ReaderParams())


def _read(images: list[np.ndarray], reader: Reader) -> tuple[list[FieldReading | None], float]:
    readings: list[FieldReading | None] = []
    start = time.perf_counter()
    for i in range(0, len(images), CHUNK):
        for r in reader(images[i : i + CHUNK]):
            readings.append(r if isinstance(r, FieldReading) else None)
    return readings, time.perf_counter() - start


def _overlap(a: Box, b: Box) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def segmented(field: Field, reading: FieldReading | None) -> bool:
    """Whether the reader found each character where it is, whatever it read there: as many
    boxes as characters, each overlapping its true box by half (intersection over union)."""
    if reading is None or len(reading.chars) != len(field.boxes):
        return False
    return all(_overlap(c.box, b) >= 0.5 for c, b in zip(reading.chars, field.boxes, strict=True))


def flagged(reading: FieldReading | None, threshold: float) -> bool:
    """Whether a worker marks the reading for review, by the worker's own rules (no field rule):
    an uncertain character or the reader's doubt; an error or an empty reading counts too."""
    if reading is None or not reading.chars:
        return True
    return bool(field_result({}, Served(None, None, field=reading), None, threshold)["review"])


def _score(kind: str, fields: list[Field], readings: list[FieldReading | None], seconds: float) -> dict[str, Any]:
    truths = [f.text for f in fields]
    texts = [r.text if r else "" for r in readings]
    chars = sum(len(t) for t in truths)
    wrong = sum(min(len(t), char_errors(t, r)) for t, r in zip(truths, texts, strict=True))
    right = [t == r for t, r in zip(truths, texts, strict=True)]
    cut = sum(segmented(f, r) for f, r in zip(fields, readings, strict=True))
    marked = [flagged(r, REVIEW_THRESHOLD) for r in readings]
    passed = [ok for ok, m in zip(right, marked, strict=True) if not m]
    return {
        "kind": kind,
        "fields": len(truths),
        "exact": round(100 * sum(right) / len(truths), 2),
        "chars": round(100 * (chars - wrong) / chars, 2),
        "segmented": round(100 * cut / len(truths), 2),
        # What an operator meets: how many go to a person, how right the rest are, and how many
        # wrong readings go through unmarked (at the default INKQ_REVIEW_THRESHOLD).
        "review": round(100 * sum(marked) / len(truths), 2),
        "unreviewed_exact": round(100 * sum(passed) / len(passed), 2) if passed else None,
        "silent_errors": round(100 * (len(passed) - sum(passed)) / len(truths), 2),
        "fields_per_s": round(len(truths) / seconds, 1),
        "chars_per_s": round(chars / seconds, 1),
        "misread": [[t, r] for t, r in zip(truths, texts, strict=True) if t != r][:8],
    }


def reading_sheet(fields: list[Field], readings: list[FieldReading | None], path: Path, width: int = 300) -> None:
    """The fields with the reader's character boxes (green: read right, red: wrong) and its
    reading beneath each: what the README shows."""
    from PIL import Image, ImageDraw

    tiles = []
    for f, r in zip(fields, readings, strict=True):
        img = f.pil()
        draw = ImageDraw.Draw(img)
        for i, c in enumerate(r.chars if r else []):
            right = i < len(f.text) and str(c.label) == f.text[i] and len(r.text) == len(f.text)  # type: ignore[union-attr]
            draw.rectangle(
                (c.box[0], c.box[1], c.box[2] - 1, c.box[3] - 1), outline=(0, 160, 0) if right else (220, 0, 0)
            )
        scale = width / img.width
        img = img.resize((width, max(1, round(img.height * scale))), Image.Resampling.LANCZOS)
        tile = Image.new("RGB", (width, img.height + 18), "white")
        tile.paste(img, (0, 0))
        said = f"{f.kind} {f.text} -> {r.text if r else 'error'} ({r.confidence:.2f})" if r else f"{f.kind}: error"
        ImageDraw.Draw(tile).text((2, img.height + 3), said, fill=(0, 0, 0))
        tiles.append(tile)
    sheet = tile_sheet(tiles, columns=3, width=width)
    sheet.quantize(colors=64).save(path, optimize=True)  # a small file for the README


def _single_digits(engine: Engine, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """MNIST digits through the serving preprocessing (what a worker does for a single image)."""
    start = time.perf_counter()
    inputs = [scan.normalize(scan.prepare(img.astype(np.float32) / 255.0)) for img in images]
    preds = engine.predict(inputs)
    seconds = time.perf_counter() - start
    right = sum(p.label == int(y) for p, y in zip(preds, labels, strict=True))
    return {
        "digits": len(labels),
        "accuracy": round(100 * right / len(labels), 2),
        "digits_per_s": round(len(labels) / seconds, 1),
    }


def measure(pool: DigitPool, reader: Reader, split: str, count: int) -> dict[str, Any]:
    """Every field figure on ``count`` fields of each kind drawn from ``pool``."""
    seed = SEEDS[split]
    out: dict[str, Any] = {}
    plain = replace(STYLES["free"], length=(1, 1), underline=0.0)
    kinds = {"comb": STYLES["comb"], "free": STYLES["free"], "box": STYLES["box"], "unboxed": plain}
    for name, style in kinds.items():
        # Boxed and unboxed single digits share seeds: the same samples, sizes and strokes.
        fields = [render_field(pool, (seed, i), style) for i in range(count)]
        readings, seconds = _read([f.image for f in fields], reader)
        out[name] = _score(name, fields, readings, seconds)
    out["box_minus_unboxed"] = round(out["box"]["exact"] - out["unboxed"]["exact"], 2)
    return out


@click.command()
@click.option(
    "--method",
    type=click.Choice(["seg", "seq", "served"]),
    default="seg",
    show_default=True,
    help="seg: segmentation then the digit model; seq: the CTC sequence network (--seq-weights); served: "
    "what workers serve, the version's line reader for free fields (if it has one) and segmentation for cells.",
)
@click.option(
    "--seq-weights",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --method seq: the sequence network's .safetensors (python -m trainer.sequence).",
)
@click.option(
    "--split",
    type=click.Choice(sorted(SEEDS)),
    default="val",
    show_default=True,
    help="val: fields from MNIST training digits (tuning); test: from test digits (reporting).",
)
@click.option("--count", type=click.IntRange(min=1), default=200, show_default=True, help="Fields of each kind.")
@click.option(
    "--model",
    "source",
    type=click.Choice(["registry", "train", "file"]),
    default="registry",
    show_default=True,
    help="registry: the current version at INKQ_REDIS_URL; train: train here (cached); file: --weights.",
)
@click.option(
    "--weights", type=click.Path(dir_okay=False, path_type=Path), help="With --model file: a .safetensors file."
)
@click.option("--train-limit", type=int, default=None, help="With --model train: training digits used (default all).")
@click.option("--train-epochs", type=int, default=3, show_default=True)
@click.option(
    "--cache",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path.home() / ".cache" / "inkq" / "fields-model.safetensors",
    show_default=True,
)
@click.option(
    "--digits",
    type=click.IntRange(min=0),
    default=2000,
    show_default=True,
    help="MNIST test digits read through the single-digit path, for comparison.",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "int8"]),
    default="auto",
    show_default=True,
    help="The digit network's precision (int8: calibrated on the version's images, as workers do).",
)
@click.option(
    "--compile/--eager",
    default=False,
    show_default=True,
    help="Compile the networks as workers do; with --precision int8 the line reader is int8 too "
    "(it is only ever compiled).",
)
@click.option("--data-root", envvar="INKQ_DATA_ROOT", show_envvar=True, required=True, type=click.Path(path_type=Path))
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the figures here."
)
@click.option(
    "--sheet",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw 9 fields of each kind with the reader's boxes and readings into this PNG.",
)
def main(
    method: str,
    seq_weights: Path | None,
    split: str,
    count: int,
    source: str,
    weights: Path | None,
    train_limit: int | None,
    train_epochs: int,
    cache: Path,
    digits: int,
    precision: str,
    compile: bool,
    data_root: Path,
    json_out: Path | None,
    sheet: Path | None,
) -> None:
    """Measure the field reader on generated fields."""
    engine = None
    if method in ("seg", "served") or digits:
        model = _digit_model(source, weights, data_root, cache, train_limit, train_epochs)
        engine = engine_from(model, precision=precision, compile=compile)
        if compile:
            engine.warm()
    if method == "seq":
        if seq_weights is None:
            raise click.UsageError("--method seq needs --seq-weights PATH (from `python -m trainer.sequence`)")
        reader = sequence_reader(seq_weights)
        described = f"sequence:{seq_weights.name}"
    elif method == "served":
        assert engine is not None
        served = engine
        reader, described = (lambda images: read_by_layout(images, served, served.sequence)), model.source
    else:
        assert engine is not None
        reader, described = segmenting(engine), model.source
    pool = DigitPool(*load_mnist(data_root, train=split == "val"))
    figures: dict[str, Any] = {"split": split, "method": method, "model": described, "count": count}
    if engine is not None:
        figures["engine"] = engine.describe()
    figures |= measure(pool, reader, split, count)
    if engine is not None and digits:
        images, labels = load_mnist(data_root, train=False)
        figures["single_digits"] = _single_digits(engine, images[:digits], labels[:digits])
    click.echo(json.dumps(figures, indent=2))
    if json_out:
        json_out.write_text(json.dumps(figures, indent=2))
    if sheet:
        shown = [render_field(pool, (SEEDS[split], i), STYLES[k]) for k in ("comb", "free", "box") for i in range(3)]
        readings, _ = _read([f.image for f in shown], reader)
        reading_sheet(shown, readings, sheet)


def _digit_model(
    source: str, weights: Path | None, data_root: Path, cache: Path, train_limit: int | None, train_epochs: int
) -> TrainedModel:
    if source == "registry":
        from bench.common import current_model
        from config.settings import load_settings

        info, blob = current_model(load_settings())
        return TrainedModel(blob, info.temperature, float(info.metrics.get("val_accuracy", 0.0)), info.version)
    if source == "file":
        if weights is None:
            raise click.UsageError("--model file needs --weights PATH (with its info.json or NAME.json beside it)")
        return from_file(weights)
    return train_or_load(data_root, cache, limit=train_limit, epochs=train_epochs)


def sequence_reader(path: Path) -> Reader:
    """The sequence network saved at ``path`` (safetensors), reading eagerly on the CPU."""
    from safetensors.torch import load_file

    from recognizer.sequence import SequenceReader, build

    model = build()
    model.load_state_dict(load_file(str(path)))
    return SequenceReader(model).read


if __name__ == "__main__":
    main()

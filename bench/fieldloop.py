"""`python -m bench.fieldloop`: the learning loop on fields, measured end to end.

  python -m bench.fieldloop --labels 300 --test 150 --json bench/results/fieldloop.json

1. a private Redis holding a copy of the current version (``bench.pipeline.stack``);
2. fields in a handwriting style neither reader has seen (hollow, outlined strokes:
   ``bench.synth.outlined``), free and in comb boxes, drawn from *training* digits outside
   the ones the line reader kept out, labelled with their texts (``producer label --csv``);
3. test fields in the same style from MNIST *test* digits, read as a worker serves them;
4. ``trainer retrain --json``: the digit network learns the labelled fields' aligned cuts,
   the line reader the whole lines (trainer/linetune.py), each gated;
5. the same test fields read by whatever version is current afterwards.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from bench.common import current_model
from bench.pipeline import stack
from bench.synth import STYLES, DigitPool, Field, load_mnist, outlined, render_field
from config.settings import load_settings
from producer.local import script
from recognizer.engine import Engine
from recognizer.fields import FieldReading
from recognizer.layout import read_by_layout
from storage.connection import connect
from storage.keys import Keys
from storage.registry import Registry
from trainer.linetune import KEPT_OUT
from trainer.sequence import digit_pool

__all__ = ["main", "outlined_pool"]

KINDS = ("free", "comb")
SEEDS = {"labels": 5101, "test": 5203}  # apart from every other field seed


def outlined_pool(pool: DigitPool) -> DigitPool:
    """The same digits drawn hollow: a style the models never trained on."""
    return DigitPool(np.stack([outlined(d) for d in pool.images]), pool.labels)


def _fields(pool: DigitPool, seed: int, count: int) -> list[Field]:
    return [render_field(pool, (seed, k, i), STYLES[kind]) for k, kind in enumerate(KINDS) for i in range(count)]


def _served(url: str, fields: list[Field]) -> dict[str, Any]:
    """Exact readings per kind by the registry's current version, as a worker reads them."""
    info, weights = Registry(connect(url), Keys()).weights()
    engine = Engine.from_weights(weights, info.arch, temperature=info.temperature, compile=False, precision="fp32")
    readings = read_by_layout([f.image for f in fields], engine, engine.sequence)
    out: dict[str, Any] = {"version": info.version}
    for kind in KINDS:
        pairs = [(f, r) for f, r in zip(fields, readings, strict=True) if f.kind == kind]
        right = sum(isinstance(r, FieldReading) and r.text == f.text for f, r in pairs)
        out[kind] = round(100 * right / len(pairs), 2)
    return out


def _label(env: dict[str, str], folder: Path, fields: list[Field]) -> None:
    folder.mkdir(parents=True)
    rows = ["path,text"]
    for i, f in enumerate(fields):
        f.pil().save(folder / f"{f.kind}-{i:04d}.png")
        rows.append(f"{f.kind}-{i:04d}.png,{f.text}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    subprocess.run([*script("producer"), "label", "--csv", str(folder / "labels.csv")], env=env, check=True)


@click.command()
@click.option("--labels", "label_count", type=click.IntRange(min=10), default=300, show_default=True, help="Per kind.")
@click.option("--test", "test_count", type=click.IntRange(min=10), default=150, show_default=True, help="Per kind.")
@click.option("--data-root", envvar="INKQ_DATA_ROOT", show_envvar=True, required=True, type=click.Path(path_type=Path))
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the figures here."
)
def main(label_count: int, test_count: int, data_root: Path, json_out: Path | None) -> None:
    """Label fields in a new style, retrain, and read the same style's test fields before and after."""
    info, weights = current_model(load_settings())
    train_pool = outlined_pool(digit_pool(data_root, KEPT_OUT))
    test_pool = outlined_pool(DigitPool(*load_mnist(data_root, train=False)))
    labelled = _fields(train_pool, SEEDS["labels"], label_count)
    test = _fields(test_pool, SEEDS["test"], test_count)
    with tempfile.TemporaryDirectory(prefix="inkq-fieldloop-") as tmp, stack(info, weights, Path(tmp)) as s:
        env = s.env | {"INKQ_DATA_ROOT": str(data_root)}
        before = _served(s.url, test)
        _label(env, Path(tmp) / "labels", labelled)
        start = time.perf_counter()
        run = subprocess.run(
            [*script("trainer"), "retrain", "--json"], env=env, check=True, capture_output=True, text=True
        )
        seconds = time.perf_counter() - start
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        after = _served(s.url, test)
    figures = {
        "labels_per_kind": label_count,
        "test_per_kind": test_count,
        "parent": info.version,
        "before": before,
        "after": after,
        "retrain_seconds": round(seconds, 1),
        "retrain": {
            k: summary.get(k)
            for k in (
                "promoted",
                "reason",
                "line_reader",
                "field_samples",
                "unaligned_fields",
                "before",
                "after",
                "phase_seconds",
            )
        },
    }
    click.echo(json.dumps(figures, indent=2))
    if json_out:
        json_out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

"""`python -m bench.fieldprep`: where a field's time goes, and how its preparation scales with processes.

A worker reads a field in two parts (worker/fieldwork.py): preparing it (decoding, finding and
erasing printed rules, cutting candidate characters and the line), which is CPU work done in the
pool of preprocessing processes where a worker has one, and the networks' part, which stays in
the model's thread. On a GPU host the model's thread is the bottleneck, so what it still does per
field sets the ceiling. This times both parts on the same fields, and preparation in pools of
1..N processes, side by side in one run:

    python -m bench.fieldprep                         # the registry's current model
    python -m bench.fieldprep --model untrained       # no model needed: timings only
    python -m bench.fieldprep --pools 1,2 --json out.json
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import click
from PIL import Image

from bench import common
from bench.synth import STYLES, DigitPool, load_mnist, render_field
from config.settings import load_settings
from recognizer.engine import Engine, engine_for
from recognizer.fieldprep import FieldInput
from recognizer.layout import read_prepared
from recognizer.network import DEFAULT_ARCH
from recognizer.preprocessing import FIELD_POOL_MIN_BATCH, Outcome, Preprocessor, field_task
from recognizer.sequence import SequenceReader, build

__all__ = ["main", "measure"]

MAX_BYTES, MAX_PIXELS = 1 << 24, 1 << 24
SEED = 4051  # speed only: fields from training digits, never the reported test fields


def field_blobs(pool: DigitPool, count: int) -> list[bytes]:
    """``count`` PNG files as a worker receives them: comb-box ZIP codes and free numbers, alternating."""
    out = []
    for i in range(count):
        field = render_field(pool, (SEED, i), STYLES["comb" if i % 2 else "free"])
        buffer = io.BytesIO()
        Image.fromarray(field.image).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def _prepare(prep: Preprocessor, blobs: list[bytes], batch: int, with_line: bool) -> tuple[list[Outcome], float]:
    task = field_task(with_line)
    start = time.perf_counter()
    outcomes = [
        o for i in range(0, len(blobs), batch) for o in prep.map(blobs[i : i + batch], task, FIELD_POOL_MIN_BATCH)
    ]
    return outcomes, time.perf_counter() - start


def _networks(engine: Engine, outcomes: list[Outcome], batch: int) -> tuple[list[Any], float]:
    prepared = [o.input for o in outcomes if isinstance(o.input, FieldInput)]
    read_prepared(prepared[:batch], engine, engine.sequence)  # warm: first calls pay for allocations
    start = time.perf_counter()
    readings = [
        r
        for i in range(0, len(prepared), batch)
        for r in read_prepared(prepared[i : i + batch], engine, engine.sequence)
    ]
    return readings, time.perf_counter() - start


def _float_lines(engine: Engine, inline: list[Outcome], batch: int, readings: list[Any]) -> dict[str, Any]:
    """Where the engine reads lines in int8: the networks' part again with the line reader in
    float, as it is served without int8 lines, and how many fields read the same both ways."""
    if engine.sequence is None or engine.sequence.int8 is None:
        return {}
    int8, engine.sequence.int8 = engine.sequence.int8, None
    try:
        floating, seconds = _networks(engine, inline, batch)
    finally:
        engine.sequence.int8 = int8
    same = sum(getattr(a, "text", a) == getattr(b, "text", b) for a, b in zip(floating, readings, strict=True))
    return {
        "networks_ms_per_field_float_lines": seconds * 1000 / len(inline),
        "float_lines_precision": "bf16" if engine.sequence.bf16 else "fp32",
        "same_reading_int8_and_float_lines": same / max(1, len(readings)),
    }


def measure(engine: Engine, blobs: list[bytes], pools: list[int], batch: int) -> dict[str, Any]:
    """Per field: preparation in the model's thread, the networks' part, and preparation's
    fields/s in each pool size; readings from pooled preparation checked against inline."""
    with_line = engine.sequence is not None
    inline, prepare_s = _prepare(Preprocessor(0, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS), blobs, batch, with_line)
    readings, networks_s = _networks(engine, inline, batch)
    n = len(blobs)
    by_pool: dict[str, float] = {"0": n / prepare_s}
    same = True
    for size in pools:
        prep = Preprocessor(size, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)  # started before the clock
        try:
            pooled, seconds = _prepare(prep, blobs, batch, with_line)
        finally:
            prep.close()
        by_pool[str(size)] = n / seconds
        same = same and [o.error for o in pooled] == [o.error for o in inline]
        again, _ = _networks(engine, pooled, batch)
        same = same and [str(getattr(r, "text", r)) for r in again] == [str(getattr(r, "text", r)) for r in readings]
    prepare_ms, networks_ms = prepare_s * 1000 / n, networks_s * 1000 / n
    return _float_lines(engine, inline, batch, readings) | {
        "fields": n,
        "batch": batch,
        "errors": sum(o.input is None for o in inline),
        "prepare_ms_per_field": prepare_ms,
        "networks_ms_per_field": networks_ms,
        "prepare_share": prepare_ms / (prepare_ms + networks_ms),
        "prepared_fields_per_second_by_processes": by_pool,
        # The model's thread alone: before, it prepared every field too; now only the networks.
        "model_thread_fields_per_second": {
            "preparing too": 1000 / (prepare_ms + networks_ms),
            "networks only": 1000 / networks_ms,
        },
        "pooled_same_as_inline": same,
    }


def _engine(model: str, compile: bool) -> Engine:
    if model == "untrained":  # the served architecture, and an untrained line reader as a v2 version has
        info, weights = common.untrained_model()
        return Engine.from_weights(weights, dict(DEFAULT_ARCH), compile=compile, sequence=SequenceReader(build()))
    settings = load_settings()
    info, weights = common.current_model(settings)
    return engine_for(info, weights, settings, compile=compile)  # as a worker builds it


@click.command()
@click.option("--model", type=click.Choice(["registry", "untrained"]), default="registry", show_default=True)
@click.option(
    "--count", type=click.IntRange(min=2), default=256, show_default=True, help="Fields, half comb, half free."
)
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True, help="Fields per worker batch.")
@click.option("--pools", default="1,2", show_default=True, help="Pool sizes to time preparation in.")
@click.option("--compile/--no-compile", default=True, show_default=True, help="Serve compiled, as a worker does.")
@click.option("--data-root", envvar="INKQ_DATA_ROOT", show_envvar=True, required=True, type=click.Path(path_type=Path))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(
    model: str, count: int, batch: int, pools: str, compile: bool, data_root: Path, json_path: Path | None
) -> None:
    """Where a field's time goes: preparation (any process) against the networks (the model's thread)."""
    engine = _engine(model, compile)
    engine.warm()
    blobs = field_blobs(DigitPool(*load_mnist(data_root, train=True)), count)
    figures = measure(engine, blobs, [int(p) for p in pools.split(",") if p], batch)
    result = {"machine": common.machine(), "engine": engine.describe(), "model": model} | figures
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"{engine.describe()}; {figures['fields']} fields, batches of {batch}")
    click.echo(
        f"per field: preparing {figures['prepare_ms_per_field']:.2f} ms, "
        f"networks {figures['networks_ms_per_field']:.2f} ms ({figures['prepare_share']:.0%} of it preparation)"
    )
    rates = ", ".join(
        f"{k} processes: {v:.0f}/s" for k, v in figures["prepared_fields_per_second_by_processes"].items()
    )
    click.echo(f"fields prepared by pool size (0: the model's thread): {rates}")
    ceiling = figures["model_thread_fields_per_second"]
    click.echo(
        f"the model's thread: {ceiling['preparing too']:.0f} fields/s preparing too, "
        f"{ceiling['networks only']:.0f}/s with preparation in the pool"
    )
    if "networks_ms_per_field_float_lines" in figures:
        click.echo(
            f"networks with the line reader in {figures['float_lines_precision']} instead of int8: "
            f"{figures['networks_ms_per_field_float_lines']:.2f} ms "
            f"({figures['same_reading_int8_and_float_lines']:.1%} of fields read the same)"
        )
    if not figures["pooled_same_as_inline"]:
        raise click.ClickException("pooled preparation read differently from inline: a bug")


if __name__ == "__main__":
    main()

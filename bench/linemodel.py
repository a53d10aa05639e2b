"""The line reader alone, in the ways it could be served: what a compiled or int8 line reader would gain.

Workers serve the line reader eagerly (lines vary in width; recognizer/sequence.py), channels-last,
under bf16 autocast where the CPU has bf16. On a CPU without AVX512 its share of a field's time is
large, so this times, on the same batches of real lines (generated free fields from training
digits, padded to one width as a worker pads them): eager fp32 in the default layout and
channels-last, eager bf16 autocast where the CPU has bf16, compiled for that one shape in fp32
and in int8 (PT2E with the x86 Inductor quantizer, calibrated on other lines), and int8 as
workers serve it where the digits serve int8 (recognizer/linequant.py: exported for any width,
calibrated on lines made from digits, run 8 lines at a time). Agreement: the
share of lines whose greedy CTC reading is the same as eager fp32's (meaningful with a trained
line reader, ``--model registry``).

    python -m bench.linemodel --model registry --json bench/results/linemodel.json
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch

from bench import common
from bench.synth import STYLES, DigitPool, load_mnist, render_field
from config.settings import load_settings
from recognizer import artifact
from recognizer.engine import bf16_capable
from recognizer.linequant import BATCH, Int8Lines, padded
from recognizer.lines import LineInput, line_input
from recognizer.quantize import calibration_sample, quantize
from recognizer.sequence import best_path, build, sequence_reader

__all__ = ["measure"]

SEED = 4052  # speed only: lines from training digits, never the reported test fields

Forward = Callable[[torch.Tensor], torch.Tensor]


def lines_of(pool: DigitPool, count: int, seed: int) -> list[LineInput]:
    return [line_input(render_field(pool, (seed, i), STYLES["free"]).image) for i in range(count)]


def _ms_per_line(forward: Forward, x: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        forward(x)  # warm: first calls allocate (and compile)
        start = time.perf_counter()
        for _ in range(repeats):
            forward(x)
    return (time.perf_counter() - start) * 1000 / repeats / len(x)


def _readings(forward: Forward, x: torch.Tensor, lines: list[LineInput]) -> list[str]:
    with torch.no_grad():
        paths = forward(x).float().argmax(-1)
    return [
        "".join(str(k) for k, _, _ in best_path(paths[i, : line.width // 4].tolist())) for i, line in enumerate(lines)
    ]


def variants(model: torch.nn.Module, calibration: torch.Tensor, digits: torch.Tensor) -> dict[str, Forward]:
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    out: dict[str, Forward] = {"eager_fp32": model, "eager_fp32_channels_last": cl}
    if bf16_capable(torch.device("cpu")):

        def bf16(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return cl(x)

        out["eager_bf16_channels_last"] = bf16
    # torch.compile is lazy: each compiles at its first call, under measure's freezing patch. The
    # quantizer is recognizer.quantize's: it exports any (N, 1, H, W) input with a dynamic batch.
    out["compiled_fp32"] = torch.compile(copy.deepcopy(model))
    out["compiled_int8"] = torch.compile(quantize(model, calibration))
    # As workers serve it: exported for any width, calibrated on lines made from digits, compiled
    # for BATCH lines at a time (recognizer/linequant.py).
    served = Int8Lines(model, digits)
    out["served_int8"] = lambda x: torch.cat([served(chunk) for chunk in x.split(BATCH)])
    return out


def measure(model: torch.nn.Module, pool: DigitPool, *, batch: int, repeats: int) -> dict[str, Any]:
    model = model.eval()
    timed = lines_of(pool, batch, SEED)
    x = padded(timed)  # as SequenceReader.log_probs pads a batch
    # int8 is exported for one width (the batch's dynamic): calibrated on other lines at that width.
    calibration = padded(lines_of(pool, 64, SEED + 1), width=int(x.shape[3]))
    reference = _readings(model, x, timed)
    figures: dict[str, Any] = {"batch": batch, "width": int(x.shape[3]), "ms_per_line": {}, "same_reading": {}}
    digits = calibration_sample(torch.from_numpy(pool.images).float()[:, None] / 255)
    for name, forward in variants(model, calibration, digits).items():
        with torch._inductor.config.patch(freezing=True):
            figures["ms_per_line"][name] = _ms_per_line(forward, x, repeats)
            same = _readings(forward, x, timed)
        figures["same_reading"][name] = sum(a == b for a, b in zip(same, reference, strict=True)) / len(timed)
    base = figures["ms_per_line"]["eager_fp32_channels_last"]
    figures["speedup_over_served_fp32"] = {k: base / v for k, v in figures["ms_per_line"].items()}
    return figures


def _model(which: str) -> torch.nn.Module:
    if which == "untrained":
        return build()
    info, weights = common.current_model(load_settings())
    reader = sequence_reader(artifact.sequence_state(weights))
    if reader is None:
        raise click.ClickException(f"version {info.version} has no line reader: use --model untrained")
    return reader.model


@click.command()
@click.option("--model", type=click.Choice(["registry", "untrained"]), default="registry", show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True, help="Lines per batch.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--data-root", envvar="INKQ_DATA_ROOT", show_envvar=True, required=True, type=click.Path(path_type=Path))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(model: str, batch: int, repeats: int, data_root: Path, json_path: Path | None) -> None:
    """Time the line reader eager, compiled and int8 on one batch of real lines."""
    figures = measure(_model(model), DigitPool(*load_mnist(data_root, train=True)), batch=batch, repeats=repeats)
    result = {"machine": common.machine(), "model": model} | figures
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"{batch} lines of {figures['width']} columns, {torch.get_num_threads()} threads")
    for name, ms in figures["ms_per_line"].items():
        click.echo(
            f"  {name:26s} {ms:7.2f} ms/line  {figures['speedup_over_served_fp32'][name]:5.2f}x  "
            f"same reading as eager fp32: {figures['same_reading'][name]:.1%}"
        )


if __name__ == "__main__":
    main()

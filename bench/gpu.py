"""`python -m bench.gpu`: the GPU run, one command that ends within a time budget.

    bash bench/gpu.sh                                        # on a GPU machine (--device cuda)
    python -m bench.gpu --device cpu --quick --out /tmp/g    # the same code paths on a CPU

It measures, on one device, in this order (each part is written to OUT/latest.json as soon as
it ends, so a run cut short keeps what it measured):

1. model-only throughput of the serving engine in each form the device has (on CUDA: eager fp32,
   eager bf16, compiled bf16, compiled + CUDA graphs in bf16 and fp32) at batch 1 to 4,096, as
   served (a host tensor in, host logits out), plus the serving form with inputs already on the
   device; agreement with eager fp32 and accuracy on the MNIST test set; compile + warm seconds;
2. then, through Redis and real workers (bench/gpuparts.py): one worker end to end by
   preprocessing pool (its start with the compile cache part 1 filled is the warm start),
   fields, several workers sharing the device, and a cold start, while the budget has room.

The model is the registry's current version at INKQ_REDIS_URL, or a copy written with
`--save-model DIR` and read with `--model DIR` on a machine that cannot reach the registry.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import click
import torch

from bench import common, gpuparts
from config.settings import load_settings
from recognizer import artifact, network
from recognizer.engine import Engine, bf16_capable
from storage.registry import VersionInfo
from trainer.data import load_split
from trainer.training import digits_of, normalize

__all__ = ["main", "variants"]

log = logging.getLogger("bench.gpu")

# Five sizes span 1 to 4,096 at a compile each per form: seven would not fit the budget.
FULL_BUCKETS = (1, 8, 64, 512, 4096)
QUICK_BUCKETS = (1, 8)


def variants(device: torch.device, quick: bool) -> list[tuple[str, str, bool, bool]]:
    """(name, precision, compile, cuda_graphs) of the engine forms to compare, most telling first."""
    if device.type == "cuda":
        return [
            ("eager_fp32", "fp32", False, False),
            ("eager_bf16", "bf16", False, False),
            ("cudagraphs_bf16", "bf16", True, True),  # what a GPU worker serves
            ("compiled_bf16", "bf16", True, False),
            ("cudagraphs_fp32", "fp32", True, True),
        ]
    out = [("eager_fp32", "fp32", False, False), ("compiled_fp32", "fp32", True, False)]
    if bf16_capable(device) and not quick:
        out.append(("compiled_bf16", "bf16", True, False))
    return out


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def load_model(model_dir: Path | None) -> tuple[VersionInfo, bytes]:
    if model_dir is None:
        return common.current_model(load_settings())
    info = VersionInfo.from_json((model_dir / "info.json").read_text())
    return info, (model_dir / "weights.safetensors").read_bytes()


def export_model(model_dir: Path) -> None:
    info, weights = common.current_model(load_settings())
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "weights.safetensors").write_bytes(weights)
    (model_dir / "info.json").write_text(json.dumps(asdict(info), indent=2, sort_keys=True) + "\n")
    click.echo(f"saved model {info.version} to {model_dir}")


def build_engines(
    info: VersionInfo, weights: bytes, device: torch.device, buckets: tuple[int, ...], cache: Path, budget: Budget
) -> tuple[dict[str, Engine], dict[str, Any]]:
    """Every engine form, compiled and warmed, while the budget lasts (half of it at most)."""
    model = artifact.load_into(network.build(info.arch), weights)
    engines: dict[str, Engine] = {}
    notes: dict[str, Any] = {}
    deadline = budget.left() / 2
    for name, precision, compiled, graphs in variants(device, quick=buckets == QUICK_BUCKETS):
        if budget.left() < deadline:
            notes[name] = "skipped: the time budget ran out"
            continue
        engine = Engine(
            model,
            temperature=info.temperature,
            device=str(device),
            precision=precision,
            buckets=buckets,
            compile=compiled,
            cuda_graphs=graphs,
            cache_dir=cache,
            version=info.version,
        )
        seconds = engine.warm()
        log.info("%s: %s, compiled and warmed in %.1fs", name, engine.describe(), seconds)
        notes[name] = {"engine": engine.describe(), "warm_seconds": round(seconds, 2), "error": engine.compile_error}
        engines[name] = engine
    return engines, notes


def resident(engine: Engine, size: int, min_seconds: float) -> float:
    """Images/s with the batch already on the device and the logits left there: the ceiling."""
    x = torch.randn(size, 1, 28, 28, device=engine.device)
    engine.forward_on_device(x)
    return common.throughput(partial(engine.forward_on_device, x), size, min_seconds=min_seconds)


def model_part(
    info: VersionInfo, weights: bytes, device: torch.device, data_root: Path, cache: Path, quick: bool, budget: Budget
) -> dict[str, Any]:
    buckets = QUICK_BUCKETS if quick else FULL_BUCKETS
    engines, notes = build_engines(info, weights, device, buckets, cache, budget)
    min_seconds = 0.05 if quick else 0.4
    served: dict[str, dict[str, float]] = {name: {} for name in engines}
    for size in buckets:  # interleaved, so drifts in clocks hit every form alike
        x = torch.randn(size, 1, 28, 28)
        for name, engine in engines.items():
            served[name][str(size)] = common.throughput(partial(engine.logits, x), size, min_seconds=min_seconds)
    serving = "cudagraphs_bf16" if "cudagraphs_bf16" in engines else next(reversed(engines))
    on_device = {str(b): resident(engines[serving], b, min_seconds) for b in buckets} if device.type == "cuda" else {}

    test, _ = load_split(data_root, train=False, limit=256 if quick else None)
    inputs = normalize(test.images)
    # Digits as served: an eleven-class model's "not one character" class is no single image's answer.
    predicted = {name: digits_of(engine.logits(inputs)) for name, engine in engines.items()}
    reference = predicted["eager_fp32"]
    return {
        "model_only": served,
        "model_only_device_resident": {serving: on_device} if on_device else {},
        "engines": notes,
        "agreement_with_eager_fp32": {n: float((p == reference).float().mean()) for n, p in predicted.items()},
        "test_accuracy": {n: float((p == test.labels).float().mean()) for n, p in predicted.items()},
        "test_n": len(test),
    }


def report(result: dict[str, Any]) -> str:
    lines = []
    table = result.get("model_only", {})
    if table:
        names = list(table)
        lines.append("model-only images/s, as served (host in, host out)")
        lines.append("batch " + "".join(f"{n:>17}" for n in names))
        for size in table[names[0]]:
            lines.append(f"{size:>5} " + "".join(f"{table[n].get(size, 0):>17.0f}" for n in names))
        for name, by_size in result.get("model_only_device_resident", {}).items():
            lines.append(f"{name} device-resident: " + ", ".join(f"{b}: {v:.0f}" for b, v in by_size.items()))
        for name in names:
            lines.append(
                f"{name}: agreement {result['agreement_with_eager_fp32'][name]:.4%}, "
                f"accuracy {result['test_accuracy'][name]:.4%} (n={result['test_n']}), {result['engines'][name]}"
            )
    if "e2e" in result:
        e2e = result["e2e"]
        lines.append(
            f"end to end, one worker: {e2e['images']} images in {e2e['seconds']:.1f}s = "
            f"{e2e['images_per_second']:.0f} images/s, accuracy {e2e['accuracy']:.2%}, "
            f"stages ms/image {json.dumps({k: round(v, 3) for k, v in e2e['stage_ms_per_image'].items()})}"
        )
        for pool, run in result.get("e2e_by_preprocess_workers", {}).items():
            lines.append(f"  with {pool} preprocessing processes: {run['images_per_second']:.0f} images/s")
    if "fields_e2e" in result:
        run = result["fields_e2e"]
        exact = ", ".join(f"{k} {v:.1%}" for k, v in sorted(run["exact"].items()))
        lines.append(
            f"fields end to end: {run['fields']} in {run['seconds']:.1f}s, {run['chars_per_second']:.0f} characters/s "
            f"({run['chars_vs_single']:.0%} of single digits/s); exact: {exact}; review {run['review']}"
        )
    if "shared_device" in result:
        run = result["shared_device"]
        lines.append(
            f"{run['workers']} workers on the device, {run['preprocess_workers_each']} preprocessing processes each: "
            f"{run['images_per_second']:.0f} images/s ({run['vs_one_worker']:.2f}x one worker), "
            f"accuracy {run['accuracy']:.2%}, {run['workers_that_served']} served"
        )
    if "worker_start_s" in result:
        lines.append(f"worker start: {result['worker_start_s']}")
    for kind in ("skipped_parts", "failed_parts"):
        lines += [f"{kind.split('_')[0]}: {name}: {why}" for name, why in result.get(kind, {}).items()]
    return "\n".join(lines)


@click.command()
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True)
@click.option("--quick", is_flag=True, help="Smoke run: batch 1 and 8, 200 images, the same code paths.")
@click.option(
    "--budget-s",
    type=click.FloatRange(min=10),
    default=420,
    show_default=True,
    help="Wall-clock budget: later parts shrink or are skipped (and say so) to stay inside it.",
)
@click.option(
    "--parts", default="model,e2e", show_default=True, help="Comma-separated: model, e2e (and the parts after it)."
)
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), help="A --save-model copy.")
@click.option("--save-model", type=click.Path(file_okay=False, path_type=Path), help="Save the current model; exit.")
@click.option("--data-root", envvar="INKQ_DATA_ROOT", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench/results/gpu"), show_default=True
)
def main(
    device: str, quick: bool, budget_s: float, parts: str, model_dir: Path | None,
    save_model: Path | None, data_root: Path | None, out: Path,
) -> None:  # fmt: skip
    """The GPU benchmark: model-only, end to end and start time on one device, within a budget."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    if save_model is not None:
        export_model(save_model)
        return
    if device == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda: no CUDA device is visible here (use --device cpu to smoke-test)")
    budget = Budget(budget_s)
    root = data_root or load_settings().path("data_root")
    info, weights = load_model(model_dir)
    dev = torch.device(device)
    result: dict[str, Any] = {
        "machine": common.machine(),
        "device": device,
        "quick": quick,
        "model_version": info.version,
    }
    result["started"] = time.time()
    out.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        result["seconds"] = time.time() - result["started"]
        (out / "latest.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")

    selected = parts.split(",")
    with tempfile.TemporaryDirectory(prefix="inkq-gpu-cache-") as cache:
        if "model" in selected:
            gpuparts.attempt(result, "model", lambda: model_part(info, weights, dev, root, Path(cache), quick, budget))
            write()
        if "e2e" in selected:
            with gpuparts.prepared(info, weights, dev, root, Path(cache), quick) as bench:
                gpuparts.run_parts(bench, result, budget.left, write)
    click.echo(report(result))
    click.echo(f"wrote {out / 'latest.json'} ({result['seconds']:.0f}s)")
    if result.get("failed_parts"):
        sys.exit(1)


if __name__ == "__main__":
    main()

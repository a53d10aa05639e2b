"""`python -m bench`: run the benchmarks, print the figures, write bench/results/.

    python -m bench                  # everything at full size (about 20 minutes on 2 cores)
    python -m bench --quick          # a smoke run: the same code paths at tiny sizes
    python -m bench --part model     # only some parts: model, e2e, fields, latency, start, retrain
    python -m bench --untrained      # an untrained network of the served architecture, no registry needed

The model under test is the registry's current version at INKQ_REDIS_URL; the end-to-end parts
copy it into a private Redis of their own and start real worker processes there.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from bench import common, fieldpipe, model_only, pipeline, plots
from bench.synth import load_mnist, write_digits
from config.settings import load_settings

PARTS = ("model", "e2e", "fields", "latency", "start", "retrain")
FIELD_ROUNDS = 3  # pairs of field and single-digit runs the fields goal takes the median of
RESULTS = Path(__file__).resolve().parent / "results"


@click.command()
@click.option(
    "--quick",
    is_flag=True,
    envvar="INKQ_BENCH_QUICK",
    show_envvar=True,
    help="Smoke run: tiny sizes, the same code paths.",
)
@click.option(
    "--part",
    "parts",
    multiple=True,
    type=click.Choice(PARTS),
    envvar="INKQ_BENCH_PARTS",
    show_envvar=True,
    help="Run only these parts (repeatable). Default: all.",
)
@click.option(
    "--images",
    type=click.IntRange(min=10),
    envvar="INKQ_BENCH_IMAGES",
    show_envvar=True,
    help="Files for the end-to-end run (default 10,000; 200 with --quick).",
)
@click.option(
    "--model-batches",
    envvar="INKQ_BENCH_MODEL_BATCHES",
    show_envvar=True,
    help="Batch sizes of the model part, comma separated (default 1,8,32,64,128,256; 8 with --quick, one "
    "compile per engine).",
)
@click.option("--data-root", envvar="INKQ_DATA_ROOT", show_envvar=True, type=click.Path(file_okay=False))
@click.option(
    "--untrained",
    is_flag=True,
    help="Serve an untrained network of the served architecture (same compute; no registry).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=RESULTS,
    show_default=True,
    envvar="INKQ_BENCH_OUT",
    show_envvar=True,
    help="Folder for latest.json and the plots.",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "int8"]),
    envvar="INKQ_BENCH_PRECISION",
    show_envvar=True,
    help="INKQ_PRECISION for the end-to-end parts' workers (default: theirs, auto). The workers get "
    "no other INKQ_ variable of this shell: they serve a private copy of the model.",
)
def main(
    quick: bool,
    parts: tuple[str, ...],
    images: int | None,
    model_batches: str | None,
    data_root: str | None,
    untrained: bool,
    out: Path,
    precision: str | None,
) -> None:
    """Benchmark inkq side by side with its baselines; every goal is a ratio from this one run."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    settings = load_settings().replace(data_root=data_root)
    selected = parts or PARTS
    result: dict[str, Any] = {"machine": common.machine(), "quick": quick, "started": time.time()}
    info, weights = common.untrained_model() if untrained else common.current_model(settings)
    result["model_version"] = "untrained" if untrained else info.version
    root = settings.path("data_root")

    if "model" in selected:
        figures = model_only.run(
            info,
            weights,
            root,
            buckets=(
                tuple(int(b) for b in model_batches.split(","))
                if model_batches
                else (8,)
                if quick
                else (1, 8, 32, 64, 128, 256)
            ),
            rounds=1 if quick else 3,
            min_seconds=0.2 if quick else 1.5,
            agreement_n=256 if quick else None,
            cache_dir=settings.path("compile_cache_dir"),
        )
        click.echo(model_only.report(figures))
        result |= figures

    pipeline_parts = [p for p in ("e2e", "fields", "latency", "start", "retrain") if p in selected]
    if pipeline_parts:
        test_images, test_labels = load_mnist(root, train=False)
        n = images or (200 if quick else 10_000)
        # Quick runs serve eager with small batches: seconds, not the minutes compiling takes.
        overrides = {"compile": "false", "buckets": "1,8", "max_batch": "8"} if quick else {}
        overrides |= {"precision": precision} if precision else {}
        with (
            tempfile.TemporaryDirectory(prefix="inkq-bench-") as tmp,
            pipeline.stack(info, weights, Path(tmp), **overrides) as s,
        ):
            work = Path(tmp)
            truth = write_digits(work / "digits", test_images[:n], test_labels[:n])
            if "e2e" in pipeline_parts:
                result["e2e"] = pipeline.end_to_end(s, work / "digits", truth)
                result["naive"] = pipeline.naive_baseline(s, work / "digits", truth, 40 if quick else 1000)
                click.echo(report_e2e(result))
                result["e2e_by_preprocess_workers"] = preprocess_pools(s, work / "digits", truth, result["e2e"])
            if "fields" in pipeline_parts:
                result["fields_e2e"] = fields_part(s, work, test_images, test_labels, truth, quick, result.get("e2e"))
            if "latency" in pipeline_parts:
                files = sorted(truth)[:200]
                rate, count = (100, 50) if quick else (200, 12_000)  # a minute at 200/s (issue 12)
                heavy: dict[str, Any] = {"rate": rate, "count": count}
                runs = {
                    "light": pipeline.latency(s, files, rate=20 if quick else 10, count=10 if quick else 100),
                    # The engine a first start compiles (a warm start loads AOT packages instead, below).
                    "heavy": pipeline.latency(s, files, **heavy, aot_packages="false"),
                }
                if not quick:  # the same code with other worker settings: not worth a smoke run's time
                    # More messages in flight: the batch a small-job load can form is bounded by them.
                    runs["heavy, 64 message threads"] = pipeline.latency(
                        s, files, **heavy, aot_packages="false", worker_threads="64"
                    )
                    # The same with Python's collector walking the model's objects (worker/heap.py).
                    runs["heavy, 64 message threads, heap not frozen"] = pipeline.latency(
                        s, files, **heavy, aot_packages="false", worker_threads="64", freeze_heap="false"
                    )
                    # A warm start: AOT packages, then the compiled engine once it is warm (worker/upgrade.py).
                    runs["heavy, 64 message threads, warm start"] = pipeline.latency(
                        s, files, **heavy, worker_threads="64"
                    )
                for wait_ms in (1, 20) if quick else (1, 2, 5, 20):
                    runs[f"light, max wait {wait_ms} ms"] = pipeline.latency(
                        s, files, rate=20 if quick else 10, count=10 if quick else 40, max_wait_ms=str(wait_ms)
                    )
                result["latency_runs"] = runs
                result["latency_ms"] = {k: runs["light"][k] for k in ("p50", "p95", "p99")}
                result["latency_ms_heavy"] = {k: runs["heavy"][k] for k in ("p50", "p95", "p99")}
                click.echo(report_latency(runs))
            if "start" in pipeline_parts:
                result["worker_start_s"] = pipeline.worker_start(s, work / "compile-cache")
                click.echo(report_start(result["worker_start_s"]))
            if "retrain" in pipeline_parts:
                train_images, train_labels = load_mnist(root, train=True)
                count = 40 if quick else 1000
                cost = pipeline.retrain_cost(
                    s, train_images[:count], train_labels[:count], root, epochs=1 if quick else settings.retrain_epochs
                )
                result["retrain"] = cost
                result["retrain_s"] = cost["seconds"]
                click.echo(f"retrain: {cost['seconds']:.1f}s for {count} new labels plus {cost['replay']} replayed")

    result["seconds"] = time.time() - result["started"]
    result["goals"] = goals(result)
    for line in result["goals"]:
        click.echo(line)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    plots.throughput(result, out / "throughput.png")
    plots.latency(result, out / "latency.png")
    click.echo(f"wrote {out / 'latest.json'}, throughput.png, latency.png ({result['seconds']:.0f}s)")


def preprocess_pools(
    s: pipeline.Stack, folder: Path, truth: dict[str, int], default: dict[str, Any]
) -> dict[str, float]:
    """End to end again with 1 and 2 preprocessing processes beside the model (the default on a
    CPU-only host is none): images/s by pool size, from this one run."""
    out = {str(default["preprocess_workers"]): default["images_per_second"]}
    for pool in ("1", "2"):
        run = pipeline.end_to_end(s, folder, truth, preprocess_workers=pool)
        out[pool] = run["images_per_second"]
    click.echo("end to end by preprocessing processes: " + ", ".join(f"{k}: {v:.0f}/s" for k, v in out.items()))
    return out


def fields_part(
    s: pipeline.Stack,
    work: Path,
    images: Any,
    labels: Any,
    digits: dict[str, int],
    quick: bool,
    e2e: dict[str, Any] | None,
) -> dict[str, Any]:
    """Fields end to end beside single digits through the same stack (``fieldpipe.beside_single_digits``)."""
    field_truth = fieldpipe.write_field_set(work / "fields", images, labels, 20 if quick else 600)
    rounds = 1 if quick else FIELD_ROUNDS
    run = fieldpipe.beside_single_digits(s, work / "fields", field_truth, work / "digits", digits, rounds, e2e)
    exact = ", ".join(f"{k} {v:.1%}" for k, v in sorted(run["exact"].items()))
    ratios = ", ".join(f"{p['ratio']:.0%}" for p in run["pairs"])
    click.echo(
        f"fields end to end (median of {rounds} pairs): {run['chars_per_second']:.0f} characters/s, "
        f"{run['chars_vs_single']:.0%} of {run['single_digits_per_second']:.0f} single digits/s "
        f"(pairs: {ratios}); exact: {exact}"
    )
    return run


def report_e2e(result: dict[str, Any]) -> str:
    e2e, naive = result["e2e"], result["naive"]
    stages = ", ".join(f"{k} {v:.0%}" for k, v in e2e["stage_share"].items())
    return (
        f"end to end: {e2e['images']} images in {e2e['seconds']:.1f}s = {e2e['images_per_second']:.0f} images/s "
        f"(accuracy {e2e['accuracy']:.2%}, {e2e['errors']} errors; stages: {stages})\n"
        f"naive Celery worker: {naive['images_per_second']:.1f} images/s on {naive['images']} images"
    )


def report_latency(runs: dict[str, dict[str, Any]]) -> str:
    return "\n".join(
        f"latency {name} ({run['rate_per_s']}/s offered, {run['achieved_rate_per_s']:.0f}/s achieved): "
        f"p50 {run['p50']:.1f} ms, p95 {run['p95']:.1f} ms, p99 {run['p99']:.1f} ms; {run.get('engine')}; "
        f"batch sizes {run['batch_sizes']}"
        for name, run in runs.items()
    )


def report_start(ws: dict[str, Any]) -> str:
    line = (
        f"worker start: cold {ws['cold']:.1f}s ({ws['cold_engine']}), warm {ws['warm']:.1f}s ({ws['warm_engine']})"
        f"; AOT packages: {ws['packages']} ({ws['package_build_s']:.0f}s after the cold start was ready)"
    )
    if "warm_compile_only" in ws:
        line += f"; warm with packages off (torch.compile only): {ws['warm_compile_only']:.1f}s"
        line += f"; importing the worker's code alone: {ws['import_only']:.1f}s"
    return line


def goals(result: dict[str, Any]) -> list[str]:
    """Each goal of the benchmark brief, as measured in this run."""
    lines = []
    model = result.get("model_only", {})
    best = "compiled_bf16" if "compiled_bf16" in model else "compiled_fp32"
    if "eager_fp32" in model and best in model:
        for size in [s for s in model[best] if int(s) >= 64]:
            ratio = model[best][size] / model["eager_fp32"][size]
            lines.append(f"goal {best} >= 2x eager fp32 at batch {size}: {ratio:.2f}x")
    if "compiled_int8" in model and best in model:
        lines += int8_goals(result, best)
    if "e2e" in result and best in model:
        batch = str(max(int(s) for s in model[best] if int(s) <= 128))
        share = result["e2e"]["images_per_second"] / model[best][batch]
        lines.append(f"goal end to end >= 50% of model-only {best} at batch {batch}: {share:.0%}")
    if "e2e" in result and "naive" in result:
        lines.append(
            f"goal end to end >= 20x naive: "
            f"{result['e2e']['images_per_second'] / result['naive']['images_per_second']:.1f}x"
        )
    if "e2e" in result and "textbook_recipe" in result:
        lines.append(
            f"goal end to end >= 100x textbook recipe: "
            f"{result['e2e']['images_per_second'] / result['textbook_recipe']:.1f}x"
        )
    if "fields_e2e" in result:
        ratio = result["fields_e2e"]["chars_vs_single"]
        lines.append(f"goal fields end to end >= 50% of single digits' characters/s: {ratio:.0%}")
    if "latency_ms" in result:
        lat = result["latency_ms"]
        lines.append(f"goal light load p50 <= 15 ms and p99 <= 50 ms: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms")
    if "worker_start_s" in result:
        ws = result["worker_start_s"]
        lines.append(f"goal worker start warm <= 5 s, cold <= 30 s: warm {ws['warm']:.1f} s, cold {ws['cold']:.1f} s")
    return lines


def int8_goals(result: dict[str, Any], best: str) -> list[str]:
    """Issue 12's bar for shipping int8: twice today's engine at batch 128, predictions agreeing
    with eager fp32 on >= 99.9% of the test set, accuracy at most 0.05 point lower."""
    model, accuracy = result["model_only"], result["test_accuracy"]
    batch = str(max(int(s) for s in model[best] if int(s) <= 128))
    drop = 100 * (accuracy["eager_fp32"] - accuracy["compiled_int8"])
    return [
        f"goal compiled int8 >= 2x {best} at batch {batch}: {model['compiled_int8'][batch] / model[best][batch]:.2f}x",
        f"goal int8 agreement with eager fp32 >= 99.9%: {result['agreement_with_eager_fp32']['compiled_int8']:.2%}",
        f"goal int8 test accuracy drop <= 0.05 point: {drop:.2f} point",
    ]


if __name__ == "__main__":
    main()

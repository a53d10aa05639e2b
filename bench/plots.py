"""The benchmark's pictures: throughput against batch size, and the latency distribution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def throughput(result: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, by_size in result.get("model_only", {}).items():
        sizes = [int(s) for s in by_size]
        ax.plot(sizes, list(by_size.values()), marker="o", label=f"model only: {name}")
    if "e2e" in result:
        e2e = result["e2e"]
        ax.axhline(e2e["images_per_second"], color="black", linestyle="-", label="inkq end to end")
    if "naive" in result:
        ax.axhline(result["naive"]["images_per_second"], color="red", linestyle="--", label="naive Celery worker")
    if "textbook_recipe" in result:
        ax.axhline(result["textbook_recipe"], color="grey", linestyle=":", label="textbook recipe (224x224)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / second")
    ax.set_title("Throughput on " + str(result.get("machine", {}).get("cpu", "this machine")))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def latency(result: dict[str, Any], path: Path) -> None:
    runs = result.get("latency_runs", {})
    if not runs:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    everything = [v for run in runs.values() for v in run.get("samples_ms") or []]
    if not everything:
        return
    # Light and heavy load differ by orders of magnitude: logarithmic bins show both.
    bins = list(np.geomspace(max(min(everything), 0.1), max(everything), 60))
    for name, run in runs.items():
        samples = run.get("samples_ms") or []
        if samples:
            ax.hist(samples, bins=bins, alpha=0.5, label=f"{name}: p50 {run['p50']:.1f} ms, p99 {run['p99']:.1f} ms")
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds from submit to result visible (log scale)")
    ax.set_ylabel("requests")
    ax.set_title("Latency of single-image requests")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

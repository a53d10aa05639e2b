"""What every benchmark shares: the machine's description, timing, the model under test."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from config.settings import Settings
from recognizer import artifact, network, scan
from storage.connection import connect
from storage.keys import Keys
from storage.registry import Registry, VersionInfo


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "avx512_bf16": "avx512_bf16" in flags,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def throughput(run: Callable[[], object], items: int, *, min_seconds: float, min_iters: int = 2) -> float:
    """Items per second of ``run`` (already warmed), timed over at least ``min_seconds``."""
    iters = 0
    start = time.perf_counter()
    while iters < min_iters or time.perf_counter() - start < min_seconds:
        run()
        iters += 1
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return iters * items / (time.perf_counter() - start)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def current_model(settings: Settings) -> tuple[VersionInfo, bytes]:
    """The registry's current version: what the workers serve."""
    return Registry(connect(settings.redis_url), Keys(settings.key_prefix)).weights()


def untrained_model() -> tuple[VersionInfo, bytes]:
    """A fresh network of the served architecture: the same compute as a trained one."""
    info = VersionInfo(
        arch=dict(network.DEFAULT_ARCH),
        preprocess_version=scan.PREPROCESS_VERSION,
        temperature=1.0,
        data_fingerprint="untrained",
        metrics={},
    )
    return info, artifact.dump(network.build())

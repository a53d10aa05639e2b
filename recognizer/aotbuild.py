"""``python -m recognizer.aotbuild``: build one model version's AOT packages (recognizer/aot.py),
the weights on stdin. A worker starts it in the background after compiling a version
(worker/packages.py); it lowers its own priority first, exits 3 when another process is
already building the same version, and after building prunes packages unused for ``--keep-days``
(recognizer/aotprune.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported in main, after lowering the priority
    import torch
    from torch import nn

    from recognizer.aot import PackageKey, Packages
    from recognizer.engine import Engine

__all__ = ["ANOTHER_BUILDS", "NICE", "build_all", "main"]

log = logging.getLogger(__name__)

NICE = 19
ANOTHER_BUILDS = 3  # the exit status when another process holds the version's lock
PRECISIONS = {"float32": "fp32", "bfloat16": "bf16", "int8": "int8"}


def _stop_on_sigterm(*_: Any) -> None:
    raise SystemExit(1)  # unwinds through the build's cleanup of its temporary files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a model version's AOT packages (weights on stdin).")
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--sha256", required=True)
    parser.add_argument("--arch", required=True, help="the architecture, as JSON")
    parser.add_argument("--buckets", required=True, help="comma separated")
    parser.add_argument("--dtype", choices=sorted(PRECISIONS), required=True)
    parser.add_argument("--lines", action="store_true", help="also the int8 line reader's widths (int8 only)")
    parser.add_argument(
        "--keep-days", type=float, default=0.0, help="then delete packages unused this many days (0: keep all)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s inkq-packages: %(message)s")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    os.nice(NICE)
    # torch only after lowering the priority: importing it is seconds of CPU.
    from recognizer import artifact
    from recognizer.aot import Packages
    from recognizer.aotprune import prune
    from recognizer.engine import Engine, configure_compiler

    weights = sys.stdin.buffer.read()
    if hashlib.sha256(weights).hexdigest() != args.sha256:
        log.error("the weights on stdin do not match --sha256")
        return 2
    arch = json.loads(args.arch)
    buckets = tuple(int(b) for b in args.buckets.split(","))
    configure_compiler(args.cache_dir)
    # The engine prepares the model exactly as serving does (device, precision, eval mode).
    engine = Engine.from_weights(
        weights, arch, device="cpu", precision=PRECISIONS[args.dtype], buckets=buckets, compile=False
    )
    packages = Packages(args.cache_dir, args.sha256, arch)
    with packages.lock() as mine:
        if not mine:
            log.info("another process is building these packages")
            return ANOTHER_BUILDS
        if args.dtype == "int8" and not engine.int8:
            log.error("this version cannot be served in int8 (no calibration images)")
            return 2
        build_all(packages, engine, artifact.calibration(weights), lines=args.lines)
    if args.keep_days > 0:
        prune(args.cache_dir, args.keep_days * 86400)
    return 0


def build_all(packages: Packages, engine: Engine, calibration: torch.Tensor | None, *, lines: bool) -> None:
    """Every package ``engine`` could load (an uncompiled engine of the version, in the precision
    served), and with ``lines`` the int8 line reader's; usable ones are kept. Hold the lock."""
    from recognizer.linequant import Int8Lines

    for bucket in engine.buckets:
        _build(packages, engine.package_key(packages, bucket), lambda: engine.model)
    if lines and engine.int8 and engine.sequence is not None and calibration is not None:
        reader = Int8Lines(engine.sequence.model, calibration, compile=False)
        for width in reader.widths():
            _build(packages, reader.package_key(packages, width), lambda: reader.model)


def _build(packages: Packages, key: PackageKey, model: Callable[[], nn.Module]) -> None:
    """One package, unless a usable one is there; ``model()`` gives the eager model (int8: made
    on first use, so a build that finds every package there quantises nothing)."""
    if packages.usable(key):
        return
    started = time.perf_counter()
    path = packages.build(model(), key)
    log.info("built %s in %.1fs", path, time.perf_counter() - started)


if __name__ == "__main__":
    sys.exit(main())

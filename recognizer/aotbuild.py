"""``python -m recognizer.aotbuild``: build one model version's AOT packages (recognizer/aot.py),
the weights on stdin. A worker starts it in the background after compiling a version
(worker/packages.py); it lowers its own priority first, and exits 3 when another process is
already building the same version.
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
from pathlib import Path
from typing import Any

__all__ = ["ANOTHER_BUILDS", "NICE", "main"]

log = logging.getLogger(__name__)

NICE = 19
ANOTHER_BUILDS = 3  # the exit status when another process holds the version's lock
PRECISIONS = {"float32": "fp32", "bfloat16": "bf16"}


def _stop_on_sigterm(*_: Any) -> None:
    raise SystemExit(1)  # unwinds through the build's cleanup of its temporary files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a model version's AOT packages (weights on stdin).")
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--sha256", required=True)
    parser.add_argument("--arch", required=True, help="the architecture, as JSON")
    parser.add_argument("--buckets", required=True, help="comma separated")
    parser.add_argument("--dtype", choices=sorted(PRECISIONS), required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s inkq-packages: %(message)s")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    os.nice(NICE)
    # torch only after lowering the priority: importing it is seconds of CPU.
    from recognizer.aot import Packages
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
        for bucket in buckets:
            if packages.usable(packages.key(bucket, engine.dtype, engine.device)):
                continue
            started = time.perf_counter()
            path = packages.build(engine.model, bucket, engine.dtype, engine.device)
            log.info("built %s in %.1fs", path, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())

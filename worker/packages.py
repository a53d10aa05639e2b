"""A worker's background builds of AOT packages (recognizer/aot.py), for its next start or swap.

After a worker has compiled a version with ``torch.compile`` on a CPU, it starts
``python -m worker.packages`` with the weights on stdin. That process runs at the lowest CPU
priority (nice 19) with one thread, so it takes only what serving leaves of the cores; it builds
one package per bucket, skipping those another worker has already built, and its failure only
means that the next start compiles again. The worker reports the build in its heartbeat
(``packages``) and ends it when it stops or switches to another version.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from recognizer.aot import Packages

__all__ = ["PackageBuilds", "main"]

log = logging.getLogger(__name__)

NICE = 19
BUILD_TIMEOUT_S = 3600.0
ANOTHER_BUILDS = 3  # the builder's exit status when another process holds the version's lock
PRECISIONS = {"float32": "fp32", "bfloat16": "bf16"}


class PackageBuilds:
    """The worker's one background build; ``status`` is what the heartbeat shows."""

    def __init__(self) -> None:
        self.status: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def start(self, packages: Packages, weights: bytes, version: str, buckets: tuple[int, ...], dtype: str) -> None:
        """Build ``version``'s packages in the background, ending any build for another version."""
        self.stop()
        command = [
            *(sys.executable, "-m", "worker.packages", "--cache-dir", str(packages.cache_dir)),
            *("--sha256", packages.weights_sha256, "--arch", packages.arch),
            *("--buckets", ",".join(map(str, buckets)), "--dtype", dtype),
        ]
        env = os.environ | {"OMP_NUM_THREADS": "1", "TORCHINDUCTOR_COMPILE_THREADS": "1"}
        try:
            # Its own session, so that stopping it also stops the compiler processes it started.
            process = subprocess.Popen(command, stdin=subprocess.PIPE, env=env, start_new_session=True)
        except OSError as exc:  # no packages: the next start compiles, serving goes on
            self.status = f"failed {version} ({exc})"
            log.warning("could not start the AOT package build for model %s: %s", version, exc)
            return
        with self._lock:
            self._process, self.status = process, f"building {version}"
        log.info("building AOT packages of model %s in the background (pid %d)", version, process.pid)
        threading.Thread(target=self._wait, args=(process, weights, version), name="inkq-packages", daemon=True).start()

    def _wait(self, process: subprocess.Popen[bytes], weights: bytes, version: str) -> None:
        started = time.monotonic()
        try:
            process.communicate(weights, timeout=BUILD_TIMEOUT_S)
        except Exception as exc:  # a build that cannot finish is ended; serving goes on
            log.warning("AOT package build for model %s failed: %s", version, exc)
            _end(process)
        seconds = time.monotonic() - started
        code = process.returncode
        if code == 0:
            status = f"built {version} in {seconds:.0f}s"
        elif code == ANOTHER_BUILDS:
            status = f"another process builds {version}"
        else:
            status = f"failed {version} (exit status {code})"
            log.warning("AOT package build for model %s failed (exit status %s); starts will compile", version, code)
        with self._lock:
            if self._process is process:
                self.status, self._process = status, None

    def stop(self) -> None:
        with self._lock:
            process, self._process = self._process, None
        if process is not None and process.poll() is None:
            _end(process)


def _end(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    except ProcessLookupError:
        pass


def _stop_on_sigterm(*_: Any) -> None:
    raise SystemExit(1)  # unwinds through the build's cleanup of its temporary files


def main(argv: list[str] | None = None) -> int:
    from recognizer.engine import Engine, configure_compiler

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

"""A worker's background builds of AOT packages (recognizer/aot.py), for its next start or swap.

After a worker has compiled a version with ``torch.compile`` on a CPU, it starts
``python -m recognizer.aotbuild`` with the weights on stdin. That process runs at the lowest CPU
priority (nice 19) with one thread, so it takes only what serving leaves of the cores; it builds
one package per bucket (an int8 worker: of the quantised network, and one per width of its int8
line reader), skipping those another worker has already built, then prunes packages nobody has
used for ``INKQ_AOT_KEEP_DAYS`` (recognizer/aotprune.py); its failure only
means that the next start compiles again. The worker reports the build in its heartbeat
(``packages``) and ends it when it stops or switches to another version.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from recognizer.aot import Packages
from recognizer.aotbuild import ANOTHER_BUILDS, NICE

__all__ = ["PackageBuilds"]

log = logging.getLogger(__name__)

BUILD_TIMEOUT_S = 3600.0


class PackageBuilds:
    """The worker's one background build; ``status`` is what the heartbeat shows."""

    def __init__(self, keep_days: float = 0.0) -> None:
        self.keep_days = keep_days  # the builder then prunes packages unused this long (0: never)
        self.status: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def start(
        self,
        packages: Packages,
        weights: bytes,
        version: str,
        buckets: tuple[int, ...],
        dtype: str,
        *,
        lines: bool = False,
    ) -> None:
        """Build ``version``'s packages in the background (``lines``: the int8 line reader's
        too), ending any build for another version."""
        self.stop()
        command = [
            *(sys.executable, "-m", "recognizer.aotbuild", "--cache-dir", str(packages.cache_dir)),
            *("--sha256", packages.weights_sha256, "--arch", packages.arch),
            *("--buckets", ",".join(map(str, buckets)), "--dtype", dtype),
            *(["--lines"] if lines else []),
            *("--keep-days", str(self.keep_days)),
        ]
        env = os.environ | {"OMP_NUM_THREADS": "1", "TORCHINDUCTOR_COMPILE_THREADS": "1"}
        try:
            # Its own session, so that stopping it also stops the compiler processes it started.
            process = subprocess.Popen(command, stdin=subprocess.PIPE, env=env, start_new_session=True)
            os.setpriority(os.PRIO_PROCESS, process.pid, NICE)  # before its imports, not after
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
        seconds, code = time.monotonic() - started, process.returncode
        with self._lock:
            stopped = self._process is not process  # ended by stop(): a swap or the worker stopping
            if not stopped:
                self._process = None
                self.status = _status(code, version, seconds)
        if stopped:
            log.info("AOT package build for model %s stopped", version)
        elif code not in (0, ANOTHER_BUILDS):
            log.warning("AOT package build for model %s failed (exit status %s); starts will compile", version, code)

    def stop(self) -> None:
        with self._lock:
            process, self._process = self._process, None
        if process is not None and process.poll() is None:
            _end(process)


def _status(code: int | None, version: str, seconds: float) -> str:
    if code == 0:
        return f"built {version} in {seconds:.0f}s"
    if code == ANOTHER_BUILDS:
        return f"another process builds {version}"
    return f"failed {version} (exit status {code})"


def _end(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    except ProcessLookupError:
        pass

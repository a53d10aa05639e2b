"""Real worker processes on this machine: `celery -A worker worker` started, awaited, stopped.

The one launcher behind `producer demo`, the benchmarks and the integration tests. No torch here:
the worker is a subprocess.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from config.errors import InkqError
from storage.connection import BLOCK_S, connect
from storage.keys import Keys
from storage.utils import as_text

__all__ = ["WorkerProcess", "start_worker", "stop"]


def start_worker(
    env: dict[str, str],
    name: str,
    log: Path,
    *,
    app: str = "worker",
    extra: tuple[str, ...] = (),
    timeout: float = 600,
    loglevel: str = "info",
) -> subprocess.Popen[bytes]:
    """`celery -A worker worker -n NAME` as a subprocess, returned once it has announced itself
    ready (model loaded, compiled and warmed). ``app`` and ``extra`` serve the benchmark's baseline
    and the tests' instrumented workers. ``loglevel``: info lets tests read what the worker did;
    the benchmarks run at warning, as a worker started without ``--loglevel`` does (Celery logs
    two lines per message at info, which a single-image job pays for)."""
    client = connect(env["INKQ_REDIS_URL"])
    ready_list = Keys(env.get("INKQ_KEY_PREFIX", "inkq")).workers_ready
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "celery", "-A", app, "worker", "-n", name, "--loglevel", loglevel]
    command += ["--without-gossip", "--without-mingle", *extra]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while True:
        got = client.blpop([ready_list], timeout=BLOCK_S)
        if got is not None and as_text(got[1]) == name:
            return process
        if got is not None:
            client.rpush(ready_list, got[1])  # another worker's announcement: leave it
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise InkqError(f"worker {name} did not become ready; its log is {log}:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    """SIGTERM (a warm shutdown: reserved messages go back) or SIGKILL, and wait for the exit."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


class WorkerProcess:
    """A real `celery -A APP worker` subprocess, ready (model loaded and warmed) on return.

    ``settings`` become INKQ_* variables of its environment; a ``name`` without ``@`` gets this
    host's name, as Celery would give it.
    """

    def __init__(
        self,
        env: dict[str, str],
        name: str,
        log: Path,
        settings: dict[str, str] | None = None,
        *,
        app: str = "worker",
        timeout: float = 240,
    ) -> None:
        self.name = name if "@" in name else f"{name}@{socket.gethostname()}"
        self.log_path = log
        self.env = env | {f"INKQ_{k.upper()}": str(v) for k, v in (settings or {}).items()}
        self.process = start_worker(self.env, self.name, log, app=app, timeout=timeout)

    def log(self) -> str:
        """The end of the worker's log, for a failing assertion's message."""
        return self.log_path.read_text()[-6000:]

    def full_log(self) -> str:
        """All of the worker's log, for asserting what it said: one record a message scrolls
        anything older out of ``log``'s tail."""
        return self.log_path.read_text()

    def kill(self) -> None:
        stop(self.process, kill=True)

    def stop(self) -> None:
        stop(self.process)

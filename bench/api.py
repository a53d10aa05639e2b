"""`python -m bench.api`: submitting PNG files through the HTTP API against `producer submit`, in one run.

    python -m bench.api                      # 10,000 MNIST test digits as PNG files
    python -m bench.api --images 500         # a smoke run

Both sides submit the same files into the same private Redis, emptied before each run (images
are stored once per content hash, so a second submit of the same files would store nothing):
`producer submit`'s own code (``Client.submit`` on the folder), then a real `producer serve`
taking the folder as one zip, then as one multipart request of single files. Submitting only
(storing, checking and queueing); no worker runs. Writes bench/results/api.json.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import click
import httpx
import redis

from bench.common import machine
from bench.synth import load_mnist, write_digits
from config.settings import Settings, load_settings
from producer.client import Client
from producer.local import free_port, local_redis

RESULTS = Path(__file__).resolve().parent / "results"
TOKEN = "bench-" + "b" * 32


def zip_folder(folder: Path) -> bytes:
    """Every PNG under ``folder`` in one zip, by its path inside the folder (how a client would
    send a folder to the API; the tests use it too)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:  # PNGs do not deflate further
        for path in sorted(folder.rglob("*.png")):
            archive.write(path, path.relative_to(folder).as_posix())
    return out.getvalue()


def timed_cli(settings: Settings, folder: Path) -> float:
    start = time.perf_counter()
    Client(settings).submit([str(folder)])
    return time.perf_counter() - start


def serve(url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INKQ_")} | {
        "INKQ_REDIS_URL": url,
        "INKQ_API_PORT": str(port),
        "INKQ_API_TOKENS": f"bench:submit:{TOKEN}",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "producer.cli", "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise click.ClickException(f"`producer serve` did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)  # a server starting up has nothing to wait on but its port


def run(images: int, data_root: Path) -> dict[str, Any]:
    pixels, labels = load_mnist(data_root, train=False)
    reps = -(-images // len(pixels))
    with tempfile.TemporaryDirectory(prefix="inkq-bench-api-") as tmp, local_redis() as url:
        folder = Path(tmp) / "scans"
        write_digits(folder, (pixels.repeat(reps, 0))[:images], (labels.repeat(reps, 0))[:images])
        settings = load_settings({}).replace(redis_url=url, queue_max_messages=1_000_000)
        store = redis.Redis.from_url(url)
        port = free_port()
        server = serve(url, port, Path(tmp) / "serve.log")
        seconds: dict[str, float] = {}
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
                headers = {"Authorization": f"Bearer {TOKEN}"}
                for _ in range(2):  # the first pass warms caches on both sides; the second counts
                    store.flushall()
                    seconds["producer submit"] = timed_cli(settings, folder)
                    store.flushall()
                    start = time.perf_counter()
                    body = zip_folder(folder)
                    seconds["zip built by the client"] = time.perf_counter() - start
                    start = time.perf_counter()
                    answer = http.post("/v1/jobs", headers=headers, files={"scans": ("scans.zip", body)})
                    seconds["API, one zip"] = time.perf_counter() - start
                    assert answer.status_code == 202 and answer.json()["items"] == images, answer.text
                    store.flushall()
                    files = [("files", (p.name, p.read_bytes())) for p in sorted(folder.glob("*.png"))]
                    start = time.perf_counter()
                    answer = http.post("/v1/jobs", headers=headers, files=files)
                    seconds["API, multipart files"] = time.perf_counter() - start
                    assert answer.status_code == 202 and answer.json()["items"] == images, answer.text
        finally:
            server.terminate()
            server.wait(30)
    rates = {name: images / s for name, s in seconds.items() if name != "zip built by the client"}
    base = rates["producer submit"]
    return {
        "images": images,
        "seconds": seconds,
        "images_per_second": rates,
        "ratio_to_producer_submit": {name: rate / base for name, rate in rates.items()},
        "machine": machine(),
    }


@click.command()
@click.option("--images", type=click.IntRange(min=10), default=10_000, show_default=True)
@click.option("--data-root", envvar="INKQ_DATA_ROOT", show_envvar=True, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=RESULTS, show_default=True)
def main(images: int, data_root: str | None, out: Path) -> None:
    """Images/s of submitting PNG files through the API and through `producer submit`."""
    root = Path(data_root) if data_root else load_settings().path("data_root")
    result = run(images, root)
    out.mkdir(parents=True, exist_ok=True)
    (out / "api.json").write_text(json.dumps(result, indent=2) + "\n")
    for name, rate in result["images_per_second"].items():
        click.echo(f"{name:<22} {rate:8.0f} images/s  ({result['ratio_to_producer_submit'][name]:.2f}x)")


if __name__ == "__main__":
    main()

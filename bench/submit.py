"""`python -m bench.submit`: what one single-image `Client.submit` costs the producer and Redis.

    python -m bench.submit                   # 1,000 single-image jobs, three rounds
    python -m bench.submit --jobs 100        # a smoke run

Each job is one MNIST test digit as a PNG file, submitted one at a time into a private Redis by
``Client.submit`` (read, check, hash, store, create the job, queue its message); no worker runs.
Reports milliseconds per submit (the best of the rounds: the machine's other work only adds)
and Redis commands per submit (from INFO commandstats, scripts' own commands included). Run it
at two commits to compare them side by side. Writes bench/results/submit.json.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import redis

from bench.common import machine
from bench.synth import load_mnist, write_digits
from config.settings import Settings, load_settings
from producer.client import Client
from producer.local import local_redis

RESULTS = Path(__file__).resolve().parent / "results"


def measure(url: str, files: list[str], rounds: int) -> dict[str, Any]:
    client = Client(Settings(redis_url=url))
    server = redis.Redis.from_url(url)
    client.submit(files[:1])  # connections and scripts loaded
    per_submit: list[float] = []
    commands = 0.0
    for _ in range(rounds):
        server.config_resetstat()
        start = time.perf_counter()
        for path in files:
            client.submit([path])
        per_submit.append((time.perf_counter() - start) * 1000 / len(files))
        stats = server.info("commandstats")
        commands = sum(v["calls"] for k, v in stats.items() if k != "cmdstat_config|resetstat") / len(files)
    return {
        "jobs": len(files),
        "rounds": rounds,
        "ms_per_submit": min(per_submit),
        "ms_per_submit_rounds": per_submit,
        "redis_commands_per_submit": commands,
        "task_events": client.settings.task_events,
    }


@click.command()
@click.option("--jobs", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--data-root", type=click.Path(file_okay=False), help="MNIST root (default INKQ_DATA_ROOT).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=RESULTS / "submit.json")
def main(jobs: int, rounds: int, data_root: str | None, out: Path) -> None:
    """Milliseconds and Redis commands per single-image submit."""
    images, labels = load_mnist(load_settings().replace(data_root=data_root).path("data_root"), train=False)
    with tempfile.TemporaryDirectory(prefix="inkq-submit-") as tmp, local_redis() as url:
        write_digits(Path(tmp), images[:jobs], labels[:jobs])
        files = sorted(str(p) for p in Path(tmp).rglob("*.png"))
        result = {"machine": machine()} | measure(url, files, rounds)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(
        f"{result['ms_per_submit']:.2f} ms and {result['redis_commands_per_submit']:.1f} Redis commands "
        f"per single-image submit (best of {rounds} rounds of {jobs}); wrote {out}"
    )


if __name__ == "__main__":
    main()

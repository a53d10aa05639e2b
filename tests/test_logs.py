"""INKQ_LOG_FORMAT=json: one JSON object a line from every inkq process, with the worker's fields."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from config.logs import formatter
from tests.conftest import BIN, MnistArrays, WorkerProcess, wait_for, write_digits


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("worker.replica", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_json_format_is_one_object_a_line_with_the_records_fields() -> None:
    line = formatter("json").format(_record("job %s: %d items\nwritten", "j1", 3, job="j1", items=3, batch=[4, 5]))
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "job j1: 3 items\nwritten" and data["level"] == "INFO"
    assert data["logger"] == "worker.replica" and data["time"]
    assert (data["job"], data["items"], data["batch"]) == ("j1", 3, [4, 5])


def test_text_format_stays_a_plain_line() -> None:
    line = formatter("text").format(_record("job %s done", "j1", job="j1"))
    assert line.endswith("INFO worker.replica: job j1 done") and not line.startswith("{")


def test_cli_setup_logs_json_when_asked() -> None:
    # A fresh interpreter: under pytest the root logger already has handlers, so setup leaves it be.
    code = (
        "import click, logging; from config.cli import setup; setup(click.Context(click.Command('x'))); "
        "logging.getLogger('inkq.test').warning('hello %s', 'there', extra={'job': 'j9'})"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("INKQ_")} | {"INKQ_LOG_FORMAT": "json"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    (line,) = done.stderr.splitlines()
    assert json.loads(line) | {"time": None} == {
        "time": None,
        "level": "WARNING",
        "logger": "inkq.test",
        "message": "hello there",
        "job": "j9",
    }


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_worker_logs_json_and_results_wait_shows_progress_lines(
    env: dict[str, str], published: str, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    write_digits(tmp_path / "scans", mnist_test[0][:40], mnist_test[1][:40])
    env = env | {"INKQ_LOG_FORMAT": "json", "INKQ_LOG_LEVEL": "info", "INKQ_CHUNK_SIZE": "16"}
    submit = subprocess.run(
        [str(BIN / "producer"), "submit", str(tmp_path / "scans"), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    job = json.loads(submit.stdout.splitlines()[-1])["job"]
    err_path = tmp_path / "results.err"
    with err_path.open("w") as err, (tmp_path / "results.out").open("w") as out:
        waiter = subprocess.Popen(
            [str(BIN / "producer"), "results", job, "--wait", "--timeout", "120"], env=env, stdout=out, stderr=err
        )
    try:
        # No worker yet: the waiter has said where the job stands before any result exists.
        wait_for(lambda: f"job {job}: queued, 0/40 done" in err_path.read_text(), 30, "the first progress line")
        worker = WorkerProcess(env, "jsonlog", tmp_path / "worker.log", {"compile": "false", "precision": "fp32"})
        try:
            assert waiter.wait(120) == 0, err_path.read_text()
        finally:
            worker.stop()
    finally:
        waiter.kill()
        waiter.wait(10)
    rows = [json.loads(line) for line in (tmp_path / "results.out").read_text().splitlines()]
    assert len(rows) == 40 and all(r["model_version"] == published for r in rows)
    progress = [line for line in err_path.read_text().splitlines() if not line.startswith("{")]
    assert all(json.loads(line) for line in err_path.read_text().splitlines() if line.startswith("{"))  # its logs
    assert re.fullmatch(rf"job {job}: complete, 40/40 done, 0 failed, [\d.]+ images/s", progress[-1]), progress

    lines = worker.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records, worker.log()
    # The banner and Python's warnings are printed, not logged; every log line is JSON.
    assert not [line for line in lines if re.match(r"\S+ \S+ (INFO|WARNING|ERROR) ", line)]
    messages = [r for r in records if r.get("job") == job and "batch" in r]
    assert messages, records[-10:]
    assert sum(r["items"] for r in messages) >= 40
    assert all(r["model_version"] == published and r["batch"] and r["level"] == "INFO" for r in messages)
    assert any(r["logger"].startswith("celery") for r in records)  # Celery's own lines share the format

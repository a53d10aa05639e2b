"""Progress while waiting for a job: plain lines off a terminal, a bar on one, nothing with --json."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from producer.cli import cli
from producer.progress import Mode, follow, mode_for
from storage.jobs import ItemResult, JobState, JobStatus


def _status(done: int, state: JobState = JobState.RUNNING, total: int = 100, failed: int = 0) -> JobStatus:
    return JobStatus(job="j1", total=total, done=done, failed=failed, created=0.0, finished=None, state=state)


class FakeJobs:
    """A job advancing one scripted status per wait; a clock advancing 2 s per reading."""

    def __init__(self, statuses: list[JobStatus]) -> None:
        self.statuses = iter(statuses)
        self.first = next(self.statuses)
        self.waits: list[float | None] = []
        self.now = 0.0

    def status(self, job: str) -> JobStatus:
        return self.first

    def wait(self, job: str, timeout: float | None = None) -> JobStatus:
        self.waits.append(timeout)
        return next(self.statuses)

    def clock(self) -> float:
        self.now += 2.0
        return self.now


def test_plain_lines_every_few_seconds_with_rate_eta_and_the_final_counts() -> None:
    jobs = FakeJobs(
        [_status(0, JobState.QUEUED), *(_status(d) for d in range(10, 100, 10)), _status(100, JobState.COMPLETE)]
    )
    out = io.StringIO()
    final = follow(jobs, "j1", None, Mode.LINES, out, clock=jobs.clock)
    assert final.state is JobState.COMPLETE
    lines = out.getvalue().splitlines()
    # One line at the first reading, then one per 5 s of the fake clock (2 s a reading), then the end.
    assert lines[0] == "job j1: running, 10/100 done, 0 failed, 5.0 images/s, ETA 00:18"
    assert 3 <= len(lines) <= 5, lines
    assert lines[-1].startswith("job j1: complete, 100/100 done, 0 failed, ") and "ETA" not in lines[-1]
    assert all(0 < (t or 0) <= 0.5 for t in jobs.waits)  # bounded blocking reads, never one long sleep


def test_a_settled_job_gets_one_line_and_no_wait() -> None:
    jobs = FakeJobs([_status(100, JobState.COMPLETE)])
    out = io.StringIO()
    follow(jobs, "j1", None, Mode.LINES, out, clock=jobs.clock)
    assert out.getvalue() == "job j1: complete, 100/100 done, 0 failed\n"
    assert jobs.waits == []


def test_timeout_stops_following_and_returns_the_last_status() -> None:
    jobs = FakeJobs([_status(0, JobState.QUEUED), *(_status(1) for _ in range(100))])
    out = io.StringIO()
    last = follow(jobs, "j1", 7.0, Mode.LINES, out, clock=jobs.clock)
    assert not last.settled and last.done == 1
    assert len(jobs.waits) <= 4


def test_no_progress_mode_is_one_plain_wait_and_writes_nothing() -> None:
    jobs = FakeJobs([_status(0, JobState.QUEUED), _status(100, JobState.COMPLETE)])
    out = io.StringIO()
    assert follow(jobs, "j1", 30.0, Mode.NONE, out).complete
    assert out.getvalue() == "" and jobs.waits == [30.0]


def test_bar_on_a_terminal_shows_counts_rate_and_eta() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    assert mode_for(out, None) is Mode.BAR
    assert mode_for(io.StringIO(), None) is Mode.LINES
    assert mode_for(out, False) is Mode.NONE and mode_for(io.StringIO(), True) is Mode.BAR
    jobs = FakeJobs([_status(0, JobState.QUEUED), _status(50), _status(100, JobState.COMPLETE)])
    follow(jobs, "j1", None, Mode.BAR, out)
    shown = out.getvalue()
    assert "100/100" in shown and "img/s" in shown and "job j1" in shown


@pytest.fixture()
def settled_job(redis_url: str) -> Iterator[str]:
    from storage.connection import connect
    from storage.jobs import Jobs
    from storage.keys import Keys

    jobs = Jobs(connect(redis_url), Keys(), ttl_s=60)
    job = jobs.create(2)
    jobs.write_results(ItemResult(job, i, {"item": f"{i}.png", "error": None}) for i in range(2))
    yield job


def test_status_watch_prints_progress_on_stderr_but_nothing_with_json(
    settled_job: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INKQ_REDIS_URL", redis_url)
    runner = CliRunner()
    plain = runner.invoke(cli, ["status", settled_job, "--watch"])
    assert plain.exit_code == 0, plain.output
    assert plain.stdout == f"{settled_job}: complete, 2/2 done, 0 failed\n"
    assert f"job {settled_job}: complete, 2/2 done" in plain.stderr
    quiet = runner.invoke(cli, ["status", settled_job, "--watch", "--json"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert json.loads(quiet.stdout)["done"] == 2

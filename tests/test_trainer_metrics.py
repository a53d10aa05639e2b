"""`trainer watch`'s metrics: what a run records, the health rule, a real `trainer watch` process
scraped over HTTP, and the Grafana dashboard querying only metrics the registries export."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from producer.local import free_port
from storage.connection import connect
from storage.keys import Keys
from storage.labels import Labels, held_out
from tests.conftest import BIN, ROOT, wait_for
from tests.redis_servers import publish_untrained
from trainer.metrics import TrainerMetrics, outcome_of
from worker.metrics import WorkerMetrics

TOKEN = "trainer-metrics-token"
PROMOTED = {
    "version": "v3",
    "promoted": True,
    "new_labels": 40,
    "seconds": 12.5,
    "before": {"new_heldout_accuracy": 0.6, "base_heldout_accuracy": 0.98},
    "after": {"new_heldout_accuracy": 0.9, "base_heldout_accuracy": 0.975},
}


def value(m: TrainerMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_a_run_counts_its_outcome_and_the_gate_figures() -> None:
    m = TrainerMetrics()
    assert value(m, "inkq_retrain_runs_total", outcome="promoted") == 0  # present before any run
    m.ran(PROMOTED)
    m.ran({"skipped": True, "reason": "lock held"})
    m.ran({"version": None, "promoted": False, "new_labels": 0, "reason": "no new labelled samples"})
    assert value(m, "inkq_retrain_runs_total", outcome="promoted") == 1
    assert value(m, "inkq_retrain_runs_total", outcome="skipped") == 1
    assert value(m, "inkq_retrain_runs_total", outcome="no_candidate") == 1
    assert value(m, "inkq_retrain_gate_accuracy", set="new", stage="after") == 0.9
    assert value(m, "inkq_retrain_gate_accuracy", set="base", stage="before") == 0.98
    assert value(m, "inkq_retrain_last_run_seconds") == 12.5
    assert value(m, "inkq_retrain_new_labels") == 0  # the last run's
    assert abs((value(m, "inkq_retrain_last_run_timestamp_seconds") or 0) - time.time()) < 60
    assert outcome_of(PROMOTED | {"promoted": False}) == "rejected"


def test_health_follows_the_watch_loop() -> None:
    m = TrainerMetrics()
    assert m.health(10)[0] is False  # no check finished yet
    m._checked_at = time.monotonic()
    assert m.health(10) == (True, "watching; last check 0s ago")
    m._checked_at = time.monotonic() - 100
    ok, reason = m.health(10)
    assert not ok and "Redis unreachable or the loop is stuck" in reason
    m.running()  # a long run makes no checks, and is no fault
    assert m.health(10)[0] is True


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_real_trainer_watch_serves_its_metrics(env: dict[str, str], redis_url: str, tmp_path: Path) -> None:
    client = connect(redis_url)
    publish_untrained(client)
    # Labels outside the held-out slice only: the run is real and ends at the gate's precondition
    # (no held-out labels to judge a candidate by) before it trains anything.
    digests = [d for d in (f"{i:064x}" for i in range(200)) if not held_out(d, 0.2)][:20]
    Labels(client, Keys()).add([(d, b"png", i % 10, f"{d}.png") for i, d in enumerate(digests)], "test")
    port = free_port()
    watch_env = env | {
        "INKQ_METRICS_PORT": str(port),
        "INKQ_METRICS_TOKEN": TOKEN,
        "INKQ_WATCH_POLL_S": "0.5",
        "INKQ_HOLDOUT_FRACTION": "0.2",
    }
    log = (tmp_path / "watch.log").open("w")
    process = subprocess.Popen([str(BIN / "trainer"), "watch"], env=watch_env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:

        def ran() -> bool:
            assert process.poll() is None, (tmp_path / "watch.log").read_text()
            status, body = _get(f"{base}/metrics", TOKEN)
            return status == 200 and 'inkq_retrain_runs_total{outcome="no_candidate"} 1.0' in body

        wait_for(ran, 90, "a retrain run counted on /metrics")
        assert _get(f"{base}/metrics")[0] == 401
        assert _get(f"{base}/metrics", "wrong-token")[0] == 401
        status, body = _get(f"{base}/healthz")
        assert status == 200 and json.loads(body)["healthy"] is True
        metrics = _get(f"{base}/metrics", TOKEN)[1]
        assert re.search(r"^inkq_retrain_labels_waiting 20\.0$", metrics, re.M)
        assert re.search(r"^inkq_retrain_last_run_timestamp_seconds [1-9]", metrics, re.M)
        assert TOKEN not in (tmp_path / "watch.log").read_text()
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def test_a_trainer_watch_with_a_port_and_no_token_refuses_to_start(env: dict[str, str]) -> None:
    run = subprocess.run(
        [str(BIN / "trainer"), "watch", "--once"],
        env=env | {"INKQ_METRICS_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1 and "INKQ_METRICS_TOKEN" in run.stderr


def _exported(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry can expose, whether or not a labelled child exists yet."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {family.name + s for family in registry.collect() for s in suffixes[family.type]}


def test_the_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "inkq.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\binkq_\w+", target["expr"])
    }
    exported = _exported(WorkerMetrics().registry) | _exported(TrainerMetrics().registry)
    assert queried - exported == set(), "the dashboard queries metrics nobody exports"
    # Every metric is on the dashboard (a histogram through any of its series).
    shown = {re.sub(r"_(bucket|sum|count)$", "", name) for name in queried}
    missing = {re.sub(r"_(bucket|sum|count)$", "", name) for name in exported} - shown
    assert missing == set(), f"metrics missing from the dashboard: {missing}"

"""Redis Sentinel: INKQ_REDIS_URL=sentinel://... for the broker and the results store alike, and a
failover in the middle of a job (a real primary, replica and sentinel) after which every item
has exactly one result."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from bench.synth import WorkerProcess, write_digits
from config.errors import ConfigError, StoreUnavailableError
from config.settings import Settings, load_settings
from producer.client import Client
from storage.connection import broker_url, connect
from storage.queue import make_app
from storage.sentinel import SentinelUrl, parse
from tests.conftest import MnistArrays, wait_for
from tests.gate import Gate
from tests.redis_servers import publish_untrained, redis_process, sentinel_process

PASSWORD = "sentinel-test-password"


def test_a_sentinel_url_lists_the_sentinels_the_password_and_the_database() -> None:
    url = "sentinel://:p%40ss@10.0.0.1:26379;sentinel://10.0.0.2;sentinel://10.0.0.3:26380/2"
    assert parse(url) == SentinelUrl((("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.3", 26380)), None, "p@ss", 2)
    # kombu reads the database from the first URL and the sentinels from all of them.
    assert broker_url(url) == (
        "sentinel://:p@ss@10.0.0.1:26379/2;sentinel://10.0.0.2:26379/2;sentinel://10.0.0.3:26380/2"
    )
    assert parse("sentinel://h:1").db == 0


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sentinel://h:1;redis://h:2", "is not a sentinel"),
        ("sentinel://h:1/0;sentinel://h:2/1", "names databases [0, 1]"),
        ("sentinel://h:1/x", "not a database number"),
        ("sentinel://h:1/0?ssl_ca_certs=/ca.pem", "TLS through Sentinel is unsupported"),
    ],
)
def test_a_bad_sentinel_url_says_how_to_fix_it(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("[", r"\[").replace("]", r"\]")):
        parse(url)


def test_the_broker_is_told_the_master_name() -> None:
    settings = load_settings({"INKQ_REDIS_URL": "sentinel://h:26379/0", "INKQ_SENTINEL_MASTER": "inkq-main"})
    options = make_app(settings).conf.broker_transport_options
    assert options["master_name"] == "inkq-main" and options["global_keyprefix"] == "inkq:broker:"
    assert "master_name" not in make_app(Settings()).conf.broker_transport_options


def test_unreachable_sentinels_fail_fast_with_the_password_hidden() -> None:
    with pytest.raises(StoreUnavailableError) as raised:
        connect(f"sentinel://:{PASSWORD}@127.0.0.1:1/0", timeout=1)
    assert PASSWORD not in str(raised.value) and "***" in str(raised.value)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_failover_during_a_job_leaves_every_item_exactly_one_result(
    env: dict[str, str], tmp_path: Path, mnist_test: MnistArrays
) -> None:
    # The replica writes the primary's snapshot to its --dir.
    auth = ("--requirepass", PASSWORD, "--masterauth", PASSWORD, "--dir", str(tmp_path))
    with (
        redis_process(*auth) as (_, primary),
        redis_process(*auth, "--replicaof", "127.0.0.1", str(primary)) as (_, replica),
    ):
        primary_client = redis.Redis(port=primary, password=PASSWORD)
        wait_for(lambda: primary_client.info("replication")["connected_slaves"] == 1, 30, "the replica to attach")
        with sentinel_process(tmp_path / "sentinel", primary, password=PASSWORD) as sentinel_port:
            url = f"sentinel://:{PASSWORD}@127.0.0.1:{sentinel_port}/0"
            # The gate lives in the test's own Redis, which no failover touches.
            gate = Gate(env["INKQ_REDIS_URL"])
            env = env | {"INKQ_REDIS_URL": url} | gate.env()
            publish_untrained(connect(url))
            worker = WorkerProcess(
                env,
                "sentinel@test",
                tmp_path / "worker.log",
                {"compile": "false", "precision": "fp32", "max_batch": "8", "buckets": "1,8"},
                app="tests.slow_worker",
            )
            try:
                images, labels = mnist_test
                total = 96
                write_digits(tmp_path / "scans", images[:total], labels[:total])
                settings = load_settings(env | {"INKQ_CHUNK_SIZE": "8"})
                client = Client(settings)
                job = client.submit([str(tmp_path / "scans")]).job
                gate.allow(1)
                wait_for(lambda: client.status(job).done > 0, 60, "the first batch's results")
                # The next batch is held at the gate: the failover comes in the middle of the job.
                wait_for(lambda: gate.held() > 0, 60, "the next batch at the gate")
                assert client.status(job).done < total

                sentinel = redis.Redis(port=sentinel_port)
                sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster")

                def promoted() -> bool:
                    address = sentinel.sentinel_get_master_addr_by_name("mymaster")
                    return isinstance(address, tuple) and address[1] == replica

                wait_for(promoted, 30, "the replica's promotion")
                gate.open()
                status = client.wait(job, timeout=180)
                assert (status.total, status.done) == (total, total), worker.log()
                results = client.results(job)
                assert len({r["item"] for r in results}) == total and all(
                    r["error"] is None and r["label"] is not None for r in results
                ), results[:3]
                # Written on the new master, which the results store followed.
                assert redis.Redis(port=replica, password=PASSWORD).info("replication")["role"] == "master"
            finally:
                worker.stop()

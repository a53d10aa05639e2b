"""Redis as inkq needs it: the eviction/persistence check at start, TLS options read one way for
both clients, socket timeouts, and the demo's Redis persisting with AOF."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from config import ConfigError, Settings, StoreUnavailableError, UnsafeStoreError
from producer.local import local_redis
from storage.connection import BLOCK_S, broker_url, connect, redact, tls_options
from storage.queue import make_app
from storage.redis_checks import check_store, read_config
from tests.conftest import BIN
from tests.redis_servers import redis_process


def test_tls_options_always_verify_and_refuse_weaker_urls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    url = f"rediss://:pw@host:6380/0?ssl_ca_certs={ca}"
    assert tls_options(url) == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True, "ssl_ca_certs": str(ca)}
    assert tls_options("rediss://host/0") == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
    assert tls_options("redis://:pw@host/0") == {}
    for weaker, why in [
        ("rediss://:pw@h/0?ssl_cert_reqs=none", "always verifies"),
        ("rediss://:pw@h/0?ssl_check_hostname=false", "always checks the host name"),
        ("redis://:pw@h/0?ssl_ca_certs=/x", "not rediss"),
        ("rediss://:pw@h/0?ssl_ca_certs=/nonexistent/ca.pem", "does not exist"),
        ("rediss://:pw@h/0?ssl_ciphers=NULL", "unknown TLS option"),
    ]:
        with pytest.raises(ConfigError, match=why) as refused:
            tls_options(weaker)
        assert ":pw@" not in str(refused.value)
    assert broker_url(url) == "rediss://:pw@host:6380/0"
    assert redact(url).startswith("rediss://:***@host:6380/0")


def test_celery_gets_the_same_tls_options_and_timeouts(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = Settings(redis_url=f"rediss://:pw@host:6380/0?ssl_ca_certs={ca}", redis_timeout_s=12)
    app = make_app(settings)
    assert app.conf.broker_use_ssl == tls_options(settings.redis_url)
    assert app.conf.broker_use_ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert app.conf.broker_url == "rediss://:pw@host:6380/0"
    options = app.conf.broker_transport_options
    assert options["socket_timeout"] == 12 and options["socket_connect_timeout"] > 0
    assert options["health_check_interval"] > 0
    assert make_app(Settings(redis_url="redis://h/0")).conf.broker_use_ssl is False
    client = connect(settings.replace(redis_url="redis://127.0.0.1:1/0"), check=False)
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 12 > BLOCK_S


def test_evicting_policies_are_refused_with_the_fix_and_the_override(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        for policy, evicts in [("volatile-lru", "queued items"), ("allkeys-lfu", "the queue, models and labels")]:
            client.config_set("maxmemory-policy", policy)
            with pytest.raises(UnsafeStoreError, match="INKQ_ALLOW_EVICTION=true") as refused:
                check_store(client, Settings(), "producer")
            assert evicts in str(refused.value) and "CONFIG SET maxmemory-policy noeviction" in str(refused.value)
            warnings = check_store(client, Settings(allow_eviction=True), "producer")
            assert any("starting anyway" in w for w in warnings)
    finally:
        client.config_set("maxmemory-policy", "noeviction")
    # The test Redis keeps nothing on disk on purpose: a warning, not a refusal.
    warnings = check_store(client, Settings(), "worker")
    assert len(warnings) == 1 and "persistence is off" in warnings[0]


def test_without_config_the_check_reads_info_and_without_either_it_warns() -> None:
    with redis_process("--maxmemory-policy", "volatile-ttl", "--rename-command", "CONFIG", "") as (_, port):
        client = connect(f"redis://127.0.0.1:{port}/0")
        assert read_config(client).source == "info"
        with pytest.raises(UnsafeStoreError, match="volatile-ttl"):
            check_store(client, Settings(), "trainer")
    with redis_process("--rename-command", "CONFIG", "", "--rename-command", "INFO", "") as (_, port):
        client = connect(f"redis://127.0.0.1:{port}/0")
        warnings = check_store(client, Settings(), "trainer")
        assert read_config(client).source == "none" and "cannot read" in warnings[0]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_worker_producer_and_trainer_refuse_an_evicting_redis(env: dict[str, str], tmp_path: Path) -> None:
    with redis_process("--maxmemory-policy", "allkeys-lru") as (_, port):
        url = f"redis://127.0.0.1:{port}/0"
        bad = env | {"INKQ_REDIS_URL": url}
        for command in (["producer", "status", "J"], ["trainer", "versions"]):
            run = subprocess.run(
                [str(BIN / command[0]), *command[1:]], env=bad, capture_output=True, text=True, timeout=120, check=False
            )
            assert run.returncode == 1 and "INKQ_ALLOW_EVICTION=true" in run.stderr, run.stderr
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.run(
                [sys.executable, "-m", "celery", "-A", "worker", "worker", "--loglevel", "info"],
                env=bad | {"INKQ_COMPILE": "false"}, stdout=out, stderr=subprocess.STDOUT, timeout=180, check=False,
            )  # fmt: skip
        assert worker.returncode != 0 and "worker refuses to start" in log.read_text()
        # The override lets the producer through, with the warning.
        run = subprocess.run(
            [str(BIN / "producer"), "status", "J"],
            env=bad | {"INKQ_ALLOW_EVICTION": "true"}, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert "starting anyway" in run.stderr and "no job 'J'" in run.stderr


@pytest.mark.timeout(60)
def test_a_hung_redis_fails_a_command_instead_of_hanging_it() -> None:
    with redis_process() as (process, port):
        client = connect(Settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_s=5))
        process.send_signal(signal.SIGSTOP)  # accepts nothing, answers nothing: a half-open peer
        try:
            started = time.monotonic()
            with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
                client.get("x")
            # redis-py retries a timed-out command 3 times: bounded, not forever.
            assert time.monotonic() - started < 4 * 5 + 10
        finally:
            process.send_signal(signal.SIGCONT)


def test_the_demo_redis_persists_with_aof(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with local_redis(state) as url:
        client = connect(url)
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("appendfsync")["appendfsync"] == "everysec"
        assert check_store(client, Settings(), "producer") == []
        client.set("kept", "1")
    assert (state / "appendonly").is_dir()
    with local_redis(state) as url:
        assert connect(url).get("kept") == b"1"


def test_a_snapshot_only_state_dir_is_carried_into_aof(tmp_path: Path) -> None:
    state = tmp_path / "old"
    state.mkdir()
    with redis_process("--dir", str(state), "--dbfilename", "redis.rdb") as (_, port):
        client = connect(f"redis://127.0.0.1:{port}/0")
        client.set("labels", "precious")
        client.save()
    with local_redis(state) as url:
        assert connect(url).get("labels") == b"precious"
        assert connect(url).config_get("appendonly")["appendonly"] == "yes"
    assert (state / "appendonly").is_dir()
    with local_redis(state) as url:
        assert connect(url).get("labels") == b"precious"


def test_connect_names_the_missing_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ConfigError, match="does not exist"):
        connect(f"rediss://127.0.0.1:1/0?ssl_ca_certs={ca}.missing")
    with pytest.raises(StoreUnavailableError, match="cannot reach Redis"):
        connect(f"rediss://127.0.0.1:1/0?ssl_ca_certs={ca}", timeout=0.5)

"""Verified TLS and a password end to end: producer, a real worker and the trainer against a
TLS-only redis-server with certificates made by the test; an untrusted certificate is refused by
redis-py and by Celery; the password shows up nowhere."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest

from config import Settings, StoreUnavailableError
from producer.local import free_port
from storage.connection import connect
from storage.keys import Keys
from storage.queue import make_app
from tests.conftest import BIN, MnistArrays, WorkerProcess, write_digits
from tests.redis_servers import make_certificates, publish_untrained, redis_process, values

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def tls_server(certs_dir: Path, password: str, port: int):  # type: ignore[no-untyped-def]
    certs = make_certificates(certs_dir)
    return certs, redis_process(
        "--port", "0", "--tls-port", str(port),
        "--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key), "--tls-ca-cert-file", str(certs.ca),
        "--tls-auth-clients", "no", "--requirepass", password,
        port=port,
    )  # fmt: skip


def run(env: dict[str, str], tool: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / tool), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.timeout(300)
def test_producer_worker_and_trainer_over_verified_tls_with_a_password(
    env: dict[str, str], mnist_test: MnistArrays, tmp_path: Path
) -> None:
    password = "pw-" + secrets.token_hex(12)
    port = free_port()
    certs, server = tls_server(tmp_path / "certs", password, port)
    url = f"rediss://:{password}@127.0.0.1:{port}/0?ssl_ca_certs={certs.ca}"
    with server:
        client = connect(url)
        version = publish_untrained(client)
        tls_env = env | {"INKQ_REDIS_URL": url, "INKQ_LOG_LEVEL": "info"}
        worker = WorkerProcess(
            tls_env, "tls", tmp_path / "worker.log", {"compile": "false", "precision": "fp32", "worker_threads": "2"}
        )
        try:
            truth = write_digits(tmp_path / "scans", mnist_test[0][:40], mnist_test[1][:40])
            submitted = run(tls_env, "producer", "submit", str(tmp_path / "scans"), "--json")
            assert submitted.returncode == 0, submitted.stderr
            job = json.loads(submitted.stdout.strip().splitlines()[-1])["job"]
            results = run(tls_env, "producer", "results", job, "--wait", "--timeout", "120", "--format", "jsonl")
            assert results.returncode == 0, results.stderr
            rows = [json.loads(line) for line in results.stdout.splitlines()]
            assert sorted(r["item"] for r in rows) == sorted(truth)
            assert all(r["error"] is None and r["model_version"] == version for r in rows)
            versions = run(tls_env, "trainer", "versions", "--json")
            assert versions.returncode == 0, versions.stderr
            assert version in versions.stdout
            heartbeat = client.get(Keys().worker(worker.name))
            assert heartbeat is not None and json.loads(heartbeat)["version"] == version
        finally:
            worker.stop()
        log = worker.log_path.read_text()
        # kombu verified the certificate: it only warns of "insecure SSL behaviour" when it would not.
        assert "insecure" not in log.lower() and "rediss://:**@127.0.0.1" in log
        for name, value in values(client):
            assert password.encode() not in value, f"the password is stored in Redis under {name}"
        outputs = [submitted.stdout, submitted.stderr, results.stdout, results.stderr, versions.stdout, versions.stderr]
        for text in [log, *outputs]:
            assert password not in text


def test_a_certificate_from_another_ca_is_refused_by_redis_py_and_celery(tmp_path: Path, env: dict[str, str]) -> None:
    password = "pw-" + secrets.token_hex(12)
    port = free_port()
    certs, server = tls_server(tmp_path / "server", password, port)
    trusted = make_certificates(tmp_path / "other", name="some other CA")  # the client trusts only this CA
    url = f"rediss://:{password}@127.0.0.1:{port}/0?ssl_ca_certs={trusted.ca}"
    with server:
        with pytest.raises(StoreUnavailableError, match="certificate is not trusted") as refused:
            connect(url)
        assert password not in str(refused.value)
        # Celery refuses too, with the wrong CA named and with none (the system's CAs; kombu alone would
        # not verify at all then).
        for celery_url in (url, url.partition("?")[0]):
            app = make_app(Settings(redis_url=celery_url))
            with app.connection_for_write() as conn, pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
        cli = run(env | {"INKQ_REDIS_URL": url}, "producer", "status", "nope", timeout=60)
        assert cli.returncode == 1 and "certificate is not trusted" in cli.stderr
        assert password not in cli.stderr + cli.stdout
        # With the right CA the same server is accepted: the refusal above is about trust alone.
        good = connect(url.replace(str(trusted.ca), str(certs.ca)))
        assert good.ping()

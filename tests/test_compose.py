"""docker-compose.yml's promises, read from the file (no Docker engine runs here): Redis with AOF,
a password and a health check; a CPU worker and GPU workers pinned one device each; `trainer
watch`; Flower; Prometheus and Grafana under a profile; a health check on every long-running
service; grace periods longer than a batch; a persistent compile cache; no needless mounts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# One-off commands (`docker compose run --rm ...`), not services that stay up.
TOOLS = {name for name, s in SERVICES.items() if "tools" in s.get("profiles", [])}
LONG_RUNNING = sorted(set(SERVICES) - TOOLS)
INKQ = sorted(name for name, s in SERVICES.items() if s.get("image") == "inkq:latest")
WORKERS = sorted(name for name in INKQ if name.startswith("worker"))
GPU_WORKERS = [name for name in WORKERS if "gpu" in SERVICES[name].get("profiles", [])]
# Everything each service may mount: what it needs and nothing more.
MOUNTS = {
    "redis": {"redis-data:/data"},
    **{name: {"compile-cache:/cache"} for name in WORKERS},
    "trainer-watch": {"./data:/data:ro"},
    "flower": set(),
    "trainer": {"./data:/data"},
    "producer": {"./scans:/scans:ro"},
    "prometheus": {"./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro", "prometheus-data:/prometheus"},
    "grafana": {
        "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro",
        "./deploy/grafana/dashboards:/etc/grafana/dashboards:ro",
        "grafana-data:/var/lib/grafana",
    },
}


def seconds(duration: str) -> float:
    """Compose's duration syntax (``1m30s``, ``600s``, ``2h``) in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a compose duration: {duration}"
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    return sum(float(n) * unit[u] for n, u in parts)


def command(service: dict[str, Any]) -> str:
    return " ".join(service.get("entrypoint", []) + service.get("command", []))


def test_redis_keeps_an_append_only_file_behind_a_password_and_a_health_check() -> None:
    redis = SERVICES["redis"]
    line = command(redis)
    assert "--appendonly yes" in line and "--maxmemory-policy noeviction" in line
    assert "requirepass" in line and "--requirepass" not in line, "the password must stay out of argv"
    assert redis["environment"]["REDISCLI_AUTH"].startswith("${INKQ_REDIS_PASSWORD:?")
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "redis-data:/data" in redis["volumes"]


@pytest.mark.parametrize("name", INKQ)
def test_every_inkq_service_reaches_redis_by_a_url_with_the_password(name: str) -> None:
    url = SERVICES[name]["environment"]["INKQ_REDIS_URL"]
    assert url.startswith("redis://:${INKQ_REDIS_PASSWORD:?") and url.endswith("@redis:6379/0")
    assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_no_secret_is_written_in_the_file() -> None:
    """Every password and token is a required variable from .env, never a value in the file."""
    for name, service in SERVICES.items():
        for key, value in dict(service.get("environment", {})).items():
            if re.search(r"PASSWORD|TOKEN|AUTH", key):
                assert re.fullmatch(r"\$\{INKQ_\w+:\?[^}]+\}", str(value)), f"{name}: {key} is not from .env"
    example = (ROOT / "deploy" / "env.example").read_text()
    for var in sorted(set(re.findall(r"\$\{(INKQ_\w+):\?", (ROOT / "docker-compose.yml").read_text()))):
        assert re.search(rf"^{var}=$", example, re.M), f"deploy/env.example does not list {var}"


def test_a_cpu_worker_and_gpu_workers_each_pinned_to_one_device() -> None:
    assert "worker" in WORKERS and "profiles" not in SERVICES["worker"]
    assert len(GPU_WORKERS) >= 2
    devices = []
    for name in GPU_WORKERS:
        service = SERVICES[name]
        (reservation,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert reservation["driver"] == "nvidia" and reservation["capabilities"] == ["gpu"]
        assert len(reservation["device_ids"]) == 1, f"{name} must be pinned to one GPU"
        devices += reservation["device_ids"]
        assert service["environment"]["INKQ_DEVICE"] == "cuda"
    assert len(set(devices)) == len(devices), "two GPU workers share a device"
    nodes = [SERVICES[name]["environment"]["NODE"] for name in WORKERS]
    assert len(set(nodes)) == len(nodes), "every worker service needs its own Celery node name"


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_every_long_running_service_has_a_health_check_and_restarts(name: str) -> None:
    service = SERVICES[name]
    check = service["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL") and seconds(check["interval"]) <= 30
    assert service["restart"] == "unless-stopped"
    assert "stop_grace_period" in service


@pytest.mark.parametrize("name", WORKERS)
def test_a_worker_is_probed_by_its_own_node_name_and_stops_gracefully(name: str) -> None:
    worker = SERVICES[name]
    node = re.search(r"-n (\S+)", command(worker))
    assert node is not None
    probe = " ".join(worker["healthcheck"]["test"][1:])
    assert probe.startswith("producer probe ") and node.group(1) in probe
    # Ready only after compiling and warming every bucket: the probe must not kill a loading worker.
    assert seconds(worker["healthcheck"]["start_period"]) >= 300
    # A batch is flushed within INKQ_MAX_WAIT_MS and runs in well under a second; a whole message of
    # INKQ_CHUNK_SIZE images in about a second on a CPU. The grace period leaves room for many.
    settings = Settings()
    assert seconds(worker["stop_grace_period"]) >= 30 > settings.max_wait_ms / 1000
    # Metrics for Prometheus: on all interfaces of the container, behind the token.
    env = worker["environment"]
    assert env["INKQ_METRICS_PORT"] == 9808 and env["INKQ_METRICS_HOST"] == "0.0.0.0"


def test_the_compile_cache_is_a_persistent_volume_under_the_cache_dir() -> None:
    assert "compile-cache" in COMPOSE["volumes"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "INKQ_COMPILE_CACHE_DIR=/cache/compile" in dockerfile
    for name in WORKERS:
        assert "compile-cache:/cache" in SERVICES[name]["volumes"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_no_service_mounts_what_it_does_not_need(name: str) -> None:
    assert set(SERVICES[name].get("volumes", [])) == MOUNTS[name]
    for mount in MOUNTS[name]:
        source = mount.split(":")[0]
        if source.startswith("./"):
            assert source in ("./data", "./scans") or (ROOT / source).exists(), f"{source} is not in the repo"
            assert mount.endswith(":ro") or name == "trainer", f"{name} may only read {source}"


def test_trainer_watch_and_flower_run_as_services() -> None:
    watch = SERVICES["trainer-watch"]
    assert command(watch) == "trainer watch" and watch["environment"]["INKQ_METRICS_PORT"] == 9809
    assert "9809/healthz" in " ".join(watch["healthcheck"]["test"])
    flower = SERVICES["flower"]
    assert command(flower).startswith("celery -A worker flower")
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${INKQ_FLOWER_AUTH:?")
    installs = re.findall(r"pip install '\.\[([a-z,]+)\]'", (ROOT / "Dockerfile").read_text())
    assert "flower" in (ROOT / "pyproject.toml").read_text() and any("flower" in x.split(",") for x in installs)


def test_published_ports_listen_on_localhost_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"


def test_prometheus_and_grafana_under_a_profile_scrape_every_endpoint_with_the_token() -> None:
    for name in ("prometheus", "grafana"):
        assert SERVICES[name]["profiles"] == ["monitoring"]
    assert SERVICES["prometheus"]["secrets"] == ["metrics_token"]
    assert COMPOSE["secrets"]["metrics_token"] == {"environment": "INKQ_METRICS_TOKEN"}
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets: set[str] = set()
    for job in config["scrape_configs"]:
        assert job["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
        targets |= {f"{n}:{d['port']}" for d in job.get("dns_sd_configs", []) for n in d["names"]}
        targets |= {t for s in job.get("static_configs", []) for t in s["targets"]}
    for name in WORKERS:
        assert f"{name}:9808" in targets
    assert "trainer-watch:9809" in targets
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "inkq.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    assert list((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")), "no dashboard to provision"

"""One typed settings object, read from ``INKQ_*`` environment variables and an optional TOML file.

Precedence, lowest first: the defaults below, the TOML file named by ``INKQ_CONFIG`` (flat
keys spelled like the fields), then environment variables (``INKQ_`` + the field name in
upper case). CLI options override individual fields with ``Settings.replace``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from config.errors import ConfigError
from config.parsing import parse_setting

ENV_PREFIX = "INKQ_"
CONFIG_FILE_VAR = "INKQ_CONFIG"


def _field(
    default: Any, doc: str, *, choices: tuple[str, ...] = (), minimum: float | None = None, secret: bool = False
) -> Any:
    # A secret stays out of the settings' repr, so logging the settings cannot leak it.
    return dataclasses.field(
        default=default, repr=not secret, metadata={"doc": doc, "choices": choices, "minimum": minimum}
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    # Connections
    redis_url: str = _field(
        "redis://127.0.0.1:6379/0",
        "Redis URL for queue, results and model registry; rediss:// for TLS (always verified; a private CA "
        "with ?ssl_ca_certs=/path/ca.pem, a client certificate with ssl_certfile and ssl_keyfile), "
        "password in the URL; sentinel://... for Redis Sentinel (INKQ_SENTINEL_MASTER).",
    )
    sentinel_master: str = _field(
        "mymaster",
        "With Redis Sentinel (INKQ_REDIS_URL=sentinel://[:PASSWORD@]HOST:PORT;sentinel://HOST:PORT/DB), the name "
        "of the master the sentinels watch; broker and results store both follow it through a failover.",
    )
    key_prefix: str = _field("inkq", "Prefix of every Redis key inkq writes.")
    redis_timeout_s: float = _field(
        30.0,
        "Seconds a Redis command may wait for a reply before failing, so a half-open connection cannot hang "
        "a thread (blocking reads wait at most 1 s, so keep this well above that).",
        minimum=5.0,
    )
    allow_eviction: bool = _field(
        False,
        "Start even when Redis's maxmemory-policy can evict inkq's keys (anything but noeviction): "
        "queued images, jobs or models may then vanish.",
    )
    log_level: str = _field(
        "warning", "Log level of every inkq process.", choices=("debug", "info", "warning", "error")
    )
    log_format: str = _field(
        "text",
        "Log lines of every inkq process: text, or json (one JSON object a line with time, level, logger, "
        "message and the record's fields, e.g. job, items, batch and model_version for the worker's messages).",
        choices=("text", "json"),
    )

    # Metrics (config/metrics_http.py: workers and `trainer watch`)
    metrics_port: int = _field(
        0,
        "Port of a worker's (or `trainer watch`'s) /metrics (Prometheus) and /healthz endpoint; 0 turns it off. "
        "Give each such process on a host its own port; INKQ_METRICS_TOKEN is then required.",
        minimum=0,
    )
    metrics_host: str = _field(
        "127.0.0.1", "Address the metrics endpoint binds (0.0.0.0 for a scraper on another host)."
    )
    metrics_token: str = _field(
        "",
        "Bearer token a scraper must send for /metrics (Authorization: Bearer TOKEN); required when "
        "INKQ_METRICS_PORT is set. Never logged.",
        secret=True,
    )

    task_events: bool = _field(
        False,
        "Celery task events, which Flower and `celery events` show tasks from: four small PUBLISHes to Redis per "
        "message (sent by the producer; received, started, succeeded by the worker), each under 2 KB since "
        "Celery cuts the arguments' text at 1 KB; nothing is stored. Off by default: they cost a single-image "
        "job about 1 ms of CPU (kombu makes a Redis client per publish); docker-compose.yml turns them on for Flower.",
    )

    # Image limits (producer and worker)
    max_image_bytes: int = _field(20 * 1024 * 1024, "Largest accepted image file, in bytes.", minimum=1)
    max_image_pixels: int = _field(
        40_000_000, "Largest accepted image area (width x height), against decompression bombs.", minimum=1
    )

    # Inference
    device: str = _field(
        "auto", "Where the model runs: auto (CUDA when present), cpu or cuda.", choices=("auto", "cpu", "cuda")
    )
    precision: str = _field(
        "auto",
        "Inference precision: auto, fp32, bf16 or int8. auto takes int8 on a CPU with VNNI or AMX when the "
        "version measured int8 agreeing with fp32 on at least 99.95% of its validation images, else bf16 where "
        "the hardware has it (and the agreement measured is at least 99.95%), else fp32. int8 is static "
        "quantisation calibrated on images stored with the version; a version without them is served as auto "
        "would (BENCHMARKS.md, int8).",
        choices=("auto", "fp32", "bf16", "int8"),
    )
    compile: bool = _field(True, "Compile the model with torch.compile (falls back to eager on failure).")
    buckets: tuple[int, ...] = _field(
        (1, 8, 32, 128), "Static batch sizes the compiled model is built for (comma separated).", minimum=1
    )
    compile_cache_dir: str = _field(
        "~/.cache/inkq/compile", "Persistent torch.compile cache, so restarts do not compile from scratch."
    )
    aot_packages: bool = _field(
        True,
        "After compiling a version on a CPU, a worker builds AOTInductor packages of it (one per bucket, in a "
        "low-priority background process) under INKQ_COMPILE_CACHE_DIR/aot; later starts and hot swaps of that "
        "version on the same kind of machine load them in about a second instead of compiling. false: always "
        "torch.compile.",
    )
    preprocess_workers: int = _field(
        -1,
        "Processes that decode and preprocess each batch in parallel: 0 does it in the model's thread; "
        "-1 (auto) takes 0 on a CPU-only host, where the model needs the cores, and every core but two "
        "on a GPU host, where one thread preprocessing caps a worker at about 3,000 images/s.",
        minimum=-1,
    )

    # Queue, batching and results
    queue: str = _field("inkq", "Name of the Celery queue that carries recognition work.")
    chunk_size: int = _field(
        128, "Images per queued message: a large submission travels in chunks this big.", minimum=1
    )
    max_batch: int = _field(128, "Hard cap on a model batch (at most the largest bucket).", minimum=1)
    max_wait_ms: float = _field(
        2.0, "A batch is flushed when its oldest image has waited this long, or when it is full.", minimum=0.0
    )
    worker_threads: int = _field(16, "Messages a worker handles at once; their images are batched together.", minimum=1)
    prefetch_multiplier: int = _field(
        1,
        "Messages a worker holds per thread, running ones included (Celery's prefetch multiplier). Above 1, "
        "the extra messages queue inside the worker, where a high-priority message would wait behind them "
        "(BENCHMARKS.md, Priorities); 1 costs no throughput, since each thread's message lasts seconds.",
        minimum=1,
    )
    visibility_timeout_s: int = _field(
        300, "Seconds before a message taken by a worker that died is delivered again.", minimum=1
    )
    max_deliveries: int = _field(
        5,
        "Deliveries of a message before it is dead-lettered and its items get an error result.",
        minimum=1,
    )
    retry_backoff_s: float = _field(
        1.0, "Delay before a failed message is retried; doubles per attempt up to the maximum.", minimum=0.0
    )
    retry_backoff_max_s: float = _field(60.0, "Longest delay before a failed message is retried.", minimum=0.0)
    stall_timeout_s: float = _field(
        120.0,
        "A worker whose model completes no batch for this long while images wait is unhealthy and "
        "releases its messages.",
        minimum=0.1,
    )
    priority_aging_s: float = _field(
        1.0,
        "Fairness between priorities: every this many seconds (once across all workers) the oldest waiting "
        "message of each lower priority moves up one level, so low-priority work advances while higher "
        "priorities keep the queue busy; 0 serves priorities strictly.",
        minimum=0.0,
    )
    queue_max_messages: int = _field(
        10_000, "Backpressure: `producer submit` waits while the queue holds more messages than this.", minimum=1
    )
    result_ttl_s: int = _field(7 * 24 * 3600, "Seconds jobs, results and their images are kept.", minimum=1)
    submit_lease_s: int = _field(
        15,
        "Seconds a running `producer submit` holds its job between renewals; a job still submitting "
        "after its hold lapsed is reported interrupted (resume it with `producer submit --resume JOB`).",
        minimum=1,
    )
    sweep_interval_s: float = _field(
        30.0,
        "How often the workers' sweeper looks for stalled jobs (one worker at a time, about once an "
        "interval however many run); see INKQ_SWEEP_STALL_S.",
        minimum=0.1,
    )
    sweep_stall_s: float = _field(
        120.0,
        "A fully queued, unfinished job that wrote no result for this long, and has no message queued or "
        "held by a worker on two sweeps in a row, gets its missing items requeued from its manifest "
        "(a message lost with a killed worker); `producer sweep` runs the same check at once.",
        minimum=0.0,
    )

    # HTTP API and review desk (`producer serve`, producer/web/)
    api_host: str = _field("127.0.0.1", "Address `producer serve` binds (0.0.0.0 to serve other hosts, behind TLS).")
    api_port: int = _field(8080, "Port of `producer serve`: the HTTP API under /v1 and the review desk.", minimum=1)
    api_tokens: str = _field(
        "",
        "API tokens as name:role:token,... (role: submit, review or admin; each role includes the ones "
        "before it). Sent as Authorization: Bearer TOKEN, or typed once into the desk's sign-in. Never logged.",
        secret=True,
    )
    api_tokens_file: str = _field(
        "", "A file of name:role:token lines, read with INKQ_API_TOKENS (keeps tokens out of env)."
    )
    api_session_key: str = _field(
        "",
        "Key that signs the desk's session cookies; empty: a random key per start (sign-ins end on restart). "
        "Set the same one on every replica. Never logged.",
        secret=True,
    )
    api_session_s: int = _field(8 * 3600, "Seconds a desk sign-in lasts.", minimum=60)
    api_max_upload_bytes: int = _field(
        1024 * 1024 * 1024, "Largest request body the API reads (counted while streaming: 413 beyond).", minimum=1
    )
    api_max_files: int = _field(100_000, "Most images in one API submit (files or zip members).", minimum=1)
    api_signin_failures: int = _field(
        5, "Failed desk sign-ins allowed per client address in 5 minutes; further tries get 429.", minimum=1
    )

    review_threshold: float = _field(
        0.8, "Results less confident than this are marked for review (`producer review`).", minimum=0.0
    )

    # Training
    data_root: str = _field(
        "~/.cache/inkq/mnist", "MNIST in torchvision's layout; downloaded there when missing and online."
    )
    weights: str = _field("none", "Initial weights for `trainer train`: none, imagenet or a file path.")
    epochs: int = _field(14, "Training epochs for `trainer train`.", minimum=1)
    batch_size: int = _field(128, "Training batch size.", minimum=1)
    learning_rate: float = _field(0.08, "Peak learning rate of the one-cycle schedule.", minimum=0.0)
    seed: int = _field(0, "Seed for data split, initialisation and augmentation.", minimum=0)
    val_size: int = _field(2000, "Training images held out for validation and model selection.", minimum=1)
    field_stage_fields: int = _field(
        5000,
        "Generated fields (from training digits) whose cut characters, and cuts that are no character, "
        "teach the base model to read fields after its MNIST epochs; 0 skips it (a ten-class model).",
        minimum=0,
    )

    # Fine-tuning on labelled samples (`trainer retrain`, `trainer watch`)
    retrain_epochs: int = _field(8, "Epochs over new labels plus replay in one retrain.", minimum=1)
    retrain_learning_rate: float = _field(0.01, "Peak learning rate of a retrain.", minimum=0.0)
    retrain_line_steps: int = _field(
        120,
        "Steps (16 lines each) a retrain fine-tunes the version's line reader for on labelled fields; "
        "0 leaves the line reader as it is.",
        minimum=0,
    )
    retrain_frozen: int = _field(
        0,
        "ResNet stages a retrain leaves as they are: 0 none, 1 the stem and layer1, 2 up to layer2. Frozen "
        "low layers keep the base strokes and skip their share of the backward pass.",
        minimum=0,
    )
    replay_ratio: float = _field(
        2.0, "Base-data images replayed per new label, so the model does not forget MNIST.", minimum=0.0
    )
    holdout_fraction: float = _field(
        0.2, "Share of labelled samples held out (by content hash) to judge candidates.", minimum=0.0
    )
    promote_min_gain: float = _field(
        0.0, "A candidate must beat the current model on held-out labels by more than this.", minimum=0.0
    )
    base_tolerance: float = _field(
        0.002, "A candidate may lose at most this much accuracy on the held-out base set.", minimum=0.0
    )
    watch_min_labels: int = _field(
        100, "`trainer watch` retrains as soon as this many labels arrived since its last run.", minimum=1
    )
    watch_interval_s: int = _field(
        600, "`trainer watch` also retrains this many seconds after its last run when any label arrived.", minimum=1
    )
    lock_ttl_s: int = _field(
        60,
        "Lifetime of the registry lock (train, retrain, rollback) and of the sweep lock; renewed while its "
        "holder lives, so a crashed holder frees it.",
        minimum=5,
    )
    keep_versions: int = _field(
        5,
        "Registry retention: besides the current version and its ancestors, the newest N versions "
        "not rejected keep their weights; the rest are pruned (metadata kept).",
        minimum=0,
    )

    def replace(self, **overrides: Any) -> Settings:
        """A copy with the non-None overrides applied (CLI options pass None when not given)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        merged = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | given
        return _validated(merged, source={k: f"--{k.replace('_', '-')}" for k in given})

    def path(self, name: str) -> Path:
        """A path-valued setting with ``~`` expanded."""
        return Path(str(getattr(self, name))).expanduser()


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from defaults, the optional TOML file and the environment."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    known = {f.name for f in dataclasses.fields(Settings)}
    config_file = env.get(CONFIG_FILE_VAR)
    if config_file:
        path = Path(config_file).expanduser()
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{CONFIG_FILE_VAR}={config_file}: cannot read TOML settings file: {exc}") from exc
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values.update(data)
        source.update({k: f"{path}: {k}" for k in data})
    for name in known:
        var = env_var(name)
        if var in env:
            values[name] = env[var]
            source[name] = var
    return _validated(values, source)


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: the documentation table."""
    rows = []
    for f in dataclasses.fields(Settings):
        default = f.default
        shown = (
            ",".join(map(str, default))
            if isinstance(default, tuple)
            else str(default).lower()
            if isinstance(default, bool)
            else str(default)
        )
        rows.append((env_var(f.name), shown, f.metadata["doc"]))
    return rows


def _validated(values: Mapping[str, Any], source: Mapping[str, str]) -> Settings:
    parsed: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if f.name not in values:
            continue
        where = source.get(f.name, f.name)
        parsed[f.name] = parse_setting(f, values[f.name], where)
    return Settings(**parsed)

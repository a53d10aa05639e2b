"""The settings of inkq's services: connections, metrics, image limits, inference, the queue and
the HTTP API. Each knob is documented where it is defined; ``config.settings.Settings`` joins
these with the learning settings (config/learning.py) into the one settings object."""

from __future__ import annotations

import dataclasses

from config.parsing import setting as _field

__all__ = ["ServiceSettings"]


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
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
        "After compiling a version on a CPU, a worker builds AOTInductor packages of it (one per bucket, and for an "
        "int8 worker one per width of its int8 line reader, in a low-priority background process) under "
        "INKQ_COMPILE_CACHE_DIR/aot; later starts and hot swaps of that "
        "version on the same kind of machine load them in about a second instead of compiling. false: always "
        "torch.compile.",
    )
    aot_keep_days: float = _field(
        14.0,
        "After each build, the builder deletes the AOT packages that no worker has loaded or built for this many "
        "days (old versions, precisions, torch releases and package formats; a deleted package that is wanted "
        "again costs one compile). 0: keep every package.",
        minimum=0.0,
    )
    freeze_heap: bool = _field(
        True,
        "Once its model is ready, and after each switch to another, a worker collects its garbage and freezes "
        "every object left (gc.freeze): Python's collector then never walks the model's objects again, a full "
        "walk that took 380-420 ms with the GIL held (worker/heap.py). false: collect as Python does by default.",
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

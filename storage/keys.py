"""The one place that builds Redis key names. Nothing else spells a key.

Every key expires (jobs, results and images after INKQ_RESULT_TTL_S, worker heartbeats and locks
after seconds) except those matched by ``DURABLE``, each with the reason it must not expire;
tests/test_redis_faults.py scans a Redis after a real job to hold every key to that.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "inkq"

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # Model registry
    @property
    def model_sequence(self) -> str:
        """Counter behind version names (v1, v2, ...). No TTL: names must never repeat; publishing
        also keeps it above the newest listed version in case it alone was lost."""
        return self._k("model", "seq")

    @property
    def model_versions(self) -> str:
        """Sorted set: version -> sequence number."""
        return self._k("model", "versions")

    def model_meta(self, version: str) -> str:
        """A version's metadata (JSON). No TTL: kept for the record even after its weights are pruned."""
        return self._k("model", version, "meta")

    def model_weights(self, version: str) -> str:
        """A version's weights (safetensors). No TTL: deleted only by retention (INKQ_KEEP_VERSIONS)."""
        return self._k("model", version, "weights")

    @property
    def model_current(self) -> str:
        """Name of the version workers serve. Durable."""
        return self._k("model", "current")

    @property
    def model_events(self) -> str:
        """Pub/sub channel announcing a new current version."""
        return self._k("model", "events")

    # Images, content-addressed: stored once however often they are submitted
    def image(self, digest: str) -> str:
        """Image bytes; expire after INKQ_RESULT_TTL_S, renewed by each job that submits them."""
        return self._k("image", digest)

    # Jobs and their results
    def job(self, job_id: str) -> str:
        """Hash: total, done, failed, created, finished, state, chunk. TTL: the result TTL."""
        return self._k("job", job_id)

    def job_results(self, job_id: str) -> str:
        """Hash: item index -> result JSON."""
        return self._k("job", job_id, "results")

    def job_failed(self, job_id: str) -> str:
        """Set of item indices whose result is an error (keeps the failed counter exact)."""
        return self._k("job", job_id, "failed")

    def job_finished(self, job_id: str) -> str:
        """List pushed once when the job completes (or is cancelled): waiters block on it, rotating
        it in place (BLMOVE) so it is never re-created without its TTL. TTL: the result TTL."""
        return self._k("job", job_id, "finished")

    def job_items(self, job_id: str) -> str:
        """List, the job's manifest: item i is JSON [digest, path] at position i. Written before
        anything is queued; TTL: the result TTL."""
        return self._k("job", job_id, "items")

    def job_queued(self, job_id: str) -> str:
        """Set of chunk numbers whose message is queued, so a resumed submit sends only the
        others. TTL: the result TTL."""
        return self._k("job", job_id, "queued")

    def job_lease(self, job_id: str) -> str:
        """String: the token of the `producer submit` queueing this job, renewed while it runs.
        TTL: INKQ_SUBMIT_LEASE_S; once it lapses an unfinished submit counts as interrupted."""
        return self._k("job", job_id, "lease")

    @property
    def jobs_active(self) -> str:
        """Sorted set: job id -> creation time, of every job begun with a manifest and not yet
        finished: the result write that finishes a job, or the cancel, removes it; the sweeper drops
        expired ones (and finished ones written before that). TTL: the result TTL, renewed by each
        job begun."""
        return self._k("jobs", "active")

    # The sweeper (storage/sweeper.py): requeues the missing items of a job whose messages were lost
    @property
    def sweep_seen(self) -> str:
        """Hash: job id -> JSON of the sweep that last found it stalled with no message in the
        broker (done, updated, time); a second such sweep requeues its missing items. TTL: the
        result TTL, renewed on each write."""
        return self._k("sweep", "seen")

    @property
    def sweep_lock(self) -> str:
        """The sweep lock: one sweeper at a time; its value is the holder's fencing token, checked
        by sweep_claim.lua before a requeue. Expires INKQ_LOCK_TTL_S after its holder stops renewing."""
        return self._k("sweep", "lock")

    @property
    def sweep_fence(self) -> str:
        """Counter of fencing tokens handed out with the sweep lock; only grows. No TTL: a token
        must never be handed out twice."""
        return self._k("sweep", "fence")

    @property
    def sweep_paced(self) -> str:
        """String set by each worker's periodic sweep, expiring after INKQ_SWEEP_INTERVAL_S: while it
        lives other workers skip their turn, so N workers sweep about once an interval, not N times."""
        return self._k("sweep", "paced")

    # Workers
    def worker(self, hostname: str) -> str:
        """A ready worker's description, refreshed by its heartbeat."""
        return self._k("worker", hostname)

    def priority_aging(self, queue: str) -> str:
        """Gate of the priority aging (storage/priority_age.lua): set for INKQ_PRIORITY_AGING_S by the
        worker that aged ``queue`` last, so all of them together age it once an interval. Expires then."""
        return self._k("priority", "aging", queue)

    @property
    def workers_ready(self) -> str:
        """List of hostnames, pushed as each worker becomes ready (for operators and tests)."""
        return self._k("workers", "ready")

    # Broker: kombu's own keys (queue lists, unacked messages) live under this prefix
    @property
    def broker_prefix(self) -> str:
        """kombu's keys: queue lists, unacked messages and their index, exchange bindings. No TTL: they
        are the work in flight (expiring them would drop queued or unfinished messages); kombu empties
        them as messages are acknowledged, and bindings are one small set per queue."""
        return self._k("broker") + ":"

    def queue_list(self, queue: str) -> str:
        return self.broker_prefix + queue

    @property
    def broker_unacked(self) -> str:
        """kombu's hash of delivered, unacknowledged messages: delivery tag -> JSON [message, exchange,
        routing key]. No TTL: kombu owns it and removes entries on ack."""
        return self.broker_prefix + "unacked"

    @property
    def broker_unacked_index(self) -> str:
        """kombu's sorted set of delivered, unacknowledged messages: delivery tag -> delivery time.

        kombu redelivers a tag once its score is older than the visibility timeout; workers bump
        the score of the messages they hold. No TTL: kombu owns it and removes entries on ack.
        """
        return self.broker_prefix + "unacked_index"

    # Delivery accounting and dead letters
    def deliveries(self, task_id: str) -> str:
        """Hash of one message (Celery task id): count (deliveries so far), error (the last one).

        Expires after INKQ_RESULT_TTL_S (its job is gone by then); deleted once the message succeeds.
        """
        return self._k("delivery", task_id)

    @property
    def dead_letters(self) -> str:
        """Hash: task id -> JSON dead letter (job, items, attempts, last error, time).

        Expires INKQ_RESULT_TTL_S after the last dead letter was added (their jobs and images expire too).
        """
        return self._k("deadletters")

    @property
    def workers_index(self) -> str:
        """Sorted set: worker hostname -> time of its last heartbeat (to list workers); expires after 24 h."""
        return self._k("workers", "index")

    # Labelled samples: durable, never expire
    def label_image(self, digest: str) -> str:
        """Bytes of a labelled image. Durable: the training data of future retrains."""
        return self._k("label", "image", digest)

    @property
    def labels(self) -> str:
        """Hash: digest -> JSON {label, source, path, time, seq}."""
        return self._k("labels")

    @property
    def labels_log(self) -> str:
        """Sorted set: digest -> arrival sequence number (a relabel moves it to the end)."""
        return self._k("labels", "log")

    @property
    def labels_sequence(self) -> str:
        """Counter giving each label its arrival number. Durable, with the labels."""
        return self._k("labels", "seq")

    @property
    def labels_used(self) -> str:
        """Sequence number up to which labels are in a promoted model."""
        return self._k("labels", "used")

    @property
    def labels_tried(self) -> str:
        """Sequence number up to which labels were seen by a retrain, promoted or not."""
        return self._k("labels", "tried")

    # Review queue: low-confidence results waiting for a person
    @property
    def review(self) -> str:
        """Sorted set: "job:index" -> time marked. TTL: the result TTL, renewed on each mark; marks
        older than that (their jobs have expired) are trimmed on write."""
        return self._k("review")

    # Retraining
    @property
    def retrain_lock(self) -> str:
        """The registry lock: held by whatever moves "current" (train, retrain, rollback, prune);
        its value is the holder's fencing token. Expires INKQ_LOCK_TTL_S after its holder stops
        renewing it, so a crashed run never blocks the next one."""
        return self._k("retrain", "lock")

    @property
    def registry_fence(self) -> str:
        """Counter of fencing tokens handed out with the registry lock; only grows. No TTL: a
        token must never be handed out twice."""
        return self._k("registry", "fence")

    @property
    def retrain_last(self) -> str:
        """Time of the last retrain by `trainer watch`. Durable: one number, the watch's schedule."""
        return self._k("retrain", "last")

    def worker_stats(self, hostname: str) -> str:
        """Hash of a worker's running totals: messages, items, milliseconds per stage."""
        return self._k("worker", hostname, "stats")

    # The HTTP API and review desk (producer/web/)
    @property
    def web_jobs(self) -> str:
        """Sorted set: job id -> time, of jobs submitted through the API, for the desk's jobs page.
        TTL: the result TTL, renewed by each submit; older entries are trimmed on write."""
        return self._k("web", "jobs")

    def signin_failures(self, client: str) -> str:
        """Counter of failed desk sign-ins from one client address. TTL: the 5-minute window it counts."""
        return self._k("web", "signin", client)

    # The benchmark's naive baseline (bench/naive.py)
    def naive_done(self, run: str) -> str:
        """Benchmark only (never in production): the benchmark flushes its private Redis."""
        return self._k("naive", run, "done")

    def naive_result(self, run: str, name: str) -> str:
        return self._k("naive", run, "result", name)


# Keys that never expire, as glob patterns below the prefix, with the reason. Everything else
# inkq writes must carry a TTL.
DURABLE: dict[str, str] = {
    "model:*": "the model registry: versions, weights, current, the version counter, events",
    "label:image:*": "labelled images, the training data of future retrains",
    "labels": "the labels themselves",
    "labels:*": "label arrival log, counter and the used/tried watermarks",
    "retrain:last": "one timestamp: when `trainer watch` last retrained",
    "sweep:fence": "the sweep lock's fencing-token counter: a token must never be handed out twice",
    "broker:*": "kombu's queue lists, unacked messages and bindings: work in flight, emptied by acknowledgement",
}


def durable_patterns(keys: Keys) -> list[str]:
    """``DURABLE`` as full glob patterns under ``keys.prefix``."""
    return [f"{keys.prefix}:{pattern}" for pattern in DURABLE]

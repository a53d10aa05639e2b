"""The one place that builds Redis key names. Nothing else spells a key."""

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
        return self._k("model", "current")

    @property
    def model_events(self) -> str:
        """Pub/sub channel announcing a new current version."""
        return self._k("model", "events")

    # Images, content-addressed: stored once however often they are submitted
    def image(self, digest: str) -> str:
        return self._k("image", digest)

    # Jobs and their results
    def job(self, job_id: str) -> str:
        """Hash: total, done, failed, created, finished."""
        return self._k("job", job_id)

    def job_results(self, job_id: str) -> str:
        """Hash: item index -> result JSON."""
        return self._k("job", job_id, "results")

    def job_failed(self, job_id: str) -> str:
        """Set of item indices whose result is an error (keeps the failed counter exact)."""
        return self._k("job", job_id, "failed")

    def job_finished(self, job_id: str) -> str:
        """List pushed once when the job completes: waiters block on it instead of polling."""
        return self._k("job", job_id, "finished")

    # Workers
    def worker(self, hostname: str) -> str:
        """A ready worker's description, refreshed by its heartbeat."""
        return self._k("worker", hostname)

    @property
    def workers_ready(self) -> str:
        """List of hostnames, pushed as each worker becomes ready (for operators and tests)."""
        return self._k("workers", "ready")

    # Broker: kombu's own keys (queue lists, unacked messages) live under this prefix
    @property
    def broker_prefix(self) -> str:
        return self._k("broker") + ":"

    def queue_list(self, queue: str) -> str:
        return self.broker_prefix + queue

    # Labelled samples: durable, never expire
    def label_image(self, digest: str) -> str:
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
        """Sorted set: "job:index" -> time marked."""
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
        """Time of the last retrain by `trainer watch`."""
        return self._k("retrain", "last")

    def worker_stats(self, hostname: str) -> str:
        """Hash of a worker's running totals: messages, items, milliseconds per stage."""
        return self._k("worker", hostname, "stats")

    # The benchmark's naive baseline (bench/naive.py)
    def naive_done(self, run: str) -> str:
        return self._k("naive", run, "done")

    def naive_result(self, run: str, name: str) -> str:
        return self._k("naive", run, "result", name)

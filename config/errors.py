"""The exception tree shared by every inkq component.

Every error a user can cause or meet derives from ``InkqError`` and carries a message
that says what went wrong and what to do about it; CLIs print it and exit non-zero.
"""

from __future__ import annotations


class InkqError(Exception):
    """Base class for every error inkq raises on purpose."""


class ConfigError(InkqError):
    """A setting has an invalid value (the message names the variable)."""


class ImageError(InkqError):
    """One image cannot be recognised; fails that item only, never its batch."""


class ImageDecodeError(ImageError):
    """The bytes are not a readable image in a supported format."""


class ImageTooLargeError(ImageError):
    """The image exceeds the configured byte or pixel limit."""


class BlankImageError(ImageError):
    """The image decodes but holds no ink to recognise."""


class ModelError(InkqError):
    """A model cannot be built, loaded or found."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights were asked for but cannot be read or downloaded."""


class VersionNotFoundError(ModelError):
    """The registry has no such model version (or no current version yet)."""


class ArtifactCorruptError(ModelError):
    """A stored model artifact fails its checksum or does not load."""


class DatasetUnavailableError(InkqError):
    """The training data is neither on disk nor downloadable."""


class StoreUnavailableError(InkqError):
    """Redis cannot be reached at the configured URL."""


class UnsafeStoreError(InkqError):
    """Redis is configured so that it can lose inkq's keys (an evicting maxmemory-policy)."""


class JobNotFoundError(InkqError):
    """No job with that id exists (or it has expired)."""


class JobStateError(InkqError):
    """The job is in no state for what was asked (resuming a cancelled job, a lost submit lease)."""


class JobInterruptedError(JobStateError):
    """The submit of a job stopped before every item was queued; `producer submit --resume JOB`
    queues the rest."""


class MessageError(InkqError):
    """A queued message is malformed (not ``(job, [[index, digest, path], ...])``); it is dead-lettered."""


class ModelStalledError(ModelError):
    """The worker's model completed no batch within INKQ_STALL_TIMEOUT_S; its messages go to other workers."""


class LockLostError(InkqError):
    """A train, retrain or rollback no longer holds the registry lock (fencing refused its write)."""


class RegistryConflictError(ModelError):
    """The registry changed under a writer: "current" moved, or a version name already exists."""


class PreprocessMismatchError(ModelError):
    """A model version was trained with a preprocessing this code does not implement."""


class NoImagesError(InkqError):
    """Nothing submittable was found under the given paths."""


class QueueFullError(InkqError):
    """The queue is deeper than INKQ_QUEUE_MAX_MESSAGES and the caller chose not to wait.

    Raised by a submit, it leaves the job resumable and its message names the job."""

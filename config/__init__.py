"""inkq's configuration: one typed settings object and the exception tree."""

from config.errors import (
    ArtifactCorruptError,
    BlankImageError,
    ConfigError,
    DatasetUnavailableError,
    ImageDecodeError,
    ImageError,
    ImageTooLargeError,
    InkqError,
    JobNotFoundError,
    ModelError,
    StoreUnavailableError,
    UnsafeStoreError,
    VersionNotFoundError,
    WeightsUnavailableError,
)
from config.settings import Settings, describe, env_var, load_settings

__all__ = [
    "ArtifactCorruptError",
    "BlankImageError",
    "ConfigError",
    "DatasetUnavailableError",
    "ImageDecodeError",
    "ImageError",
    "ImageTooLargeError",
    "InkqError",
    "JobNotFoundError",
    "ModelError",
    "Settings",
    "StoreUnavailableError",
    "UnsafeStoreError",
    "VersionNotFoundError",
    "WeightsUnavailableError",
    "describe",
    "env_var",
    "load_settings",
]

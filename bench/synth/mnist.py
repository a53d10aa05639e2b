"""MNIST's IDX files read with numpy alone: the one reader for trainer, tests, benchmarks and demos.

No torch here, so `producer demo` can read MNIST without importing it; `trainer.data` uses this
reader too and only falls back to torchvision to download missing files.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from config.errors import DatasetUnavailableError

__all__ = ["FILES", "load_mnist", "mnist_present", "read_idx"]

# (images, labels) file names of each split, in torchvision's layout under ROOT/MNIST/raw.
FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_UBYTE = 0x08  # the IDX type code for unsigned bytes, the only one MNIST uses


def _candidates(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + ".gz")]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (or its .gz beside it) as a writable uint8 array of the shape it declares."""
    for candidate in _candidates(path):
        if candidate.exists():
            raw = candidate.read_bytes()
            if candidate.suffix == ".gz":
                raw = gzip.decompress(raw)
            if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != _UBYTE:
                raise DatasetUnavailableError(f"{candidate} is not an unsigned-byte IDX file; download MNIST again")
            dims = raw[3]
            shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
            body = 4 + 4 * dims
            if len(raw) - body != int(np.prod(shape)):
                raise DatasetUnavailableError(f"{candidate} is truncated or padded; download MNIST again")
            # A bytearray keeps the array writable (torch.from_numpy warns on read-only memory).
            return np.frombuffer(bytearray(raw[body:]), dtype=np.uint8).reshape(shape)
    raise DatasetUnavailableError(f"MNIST file {path} not found; pass --data-root (INKQ_DATA_ROOT)")


def mnist_present(root: Path, *, train: bool) -> bool:
    raw = root / "MNIST" / "raw"
    return all(any(c.exists() for c in _candidates(raw / name)) for name in FILES[train])


def load_mnist(root: Path, *, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """One split's raw images (uint8, N x 28 x 28, white ink on black) and labels (int64)."""
    raw = root / "MNIST" / "raw"
    images_file, labels_file = FILES[train]
    images, labels = read_idx(raw / images_file), read_idx(raw / labels_file)
    if images.ndim != 3 or len(images) != len(labels):
        raise DatasetUnavailableError(
            f"MNIST under {raw} is inconsistent: images {images.shape}, labels {labels.shape}"
        )
    return images, labels.astype(np.int64)

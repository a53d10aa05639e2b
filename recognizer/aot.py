"""Ahead-of-time compiled models (AOTInductor packages) in the compile cache, so that a worker
start or a hot swap loads in about a second what ``torch.compile`` takes tens of seconds to build.

Inductor's FX graph cache refuses graphs with frozen weights, so without these every start
compiles every bucket again. A package is one bucket of one version, frozen, for one precision,
device kind, torch version and machine architecture; all of that is in its key, so a package is
loaded only where it was built for. Each package has a manifest beside it (its key and the
SHA-256 of its bytes): a package is loaded only when the manifest matches the key and the bytes
their checksum, and a probe batch gives the eager model's logits; otherwise the caller compiles.

Packages are written to a temporary name and renamed, manifest last, under a lock per version,
so two workers building at once neither corrupt each other's files nor both do the work.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["AotForward", "PackageKey", "Packages", "device_kind"]

log = logging.getLogger(__name__)

# Bump when the way packages are built changes, so older ones are never loaded.
FORMAT = 1


def device_kind(device: torch.device) -> str:
    """What a package's kernels were compiled for: the CPU's vector ISA, or the GPU's capability."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda-sm{major}{minor}"
    return f"cpu-{torch.backends.cpu.get_cpu_capability()}"


@dataclass(frozen=True)
class PackageKey:
    weights_sha256: str
    arch: str  # the architecture, as canonical JSON
    bucket: int
    dtype: str
    device: str
    torch: str
    machine: str
    format: int = FORMAT

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


class AotForward:
    """One loaded package per bucket, called like the model (a batch's size is always a bucket)."""

    def __init__(self, runners: dict[int, Any]) -> None:
        self.runners = runners

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.runners[int(x.shape[0])](x)
        return out[0] if isinstance(out, (list, tuple)) else out


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Packages:
    """The packages of one model version (by the SHA-256 of its weights) in ``cache_dir/aot``."""

    def __init__(self, cache_dir: Path, weights_sha256: str, arch: dict[str, Any]) -> None:
        if not weights_sha256:
            raise ValueError("packages need the weights' SHA-256")
        self.cache_dir = cache_dir
        self.root = cache_dir / "aot" / weights_sha256[:32]
        self.weights_sha256 = weights_sha256
        self.arch = json.dumps(arch, sort_keys=True)

    def key(self, bucket: int, dtype: torch.dtype, device: torch.device) -> PackageKey:
        return PackageKey(
            weights_sha256=self.weights_sha256,
            arch=self.arch,
            bucket=int(bucket),
            dtype=str(dtype).removeprefix("torch."),
            device=device_kind(device),
            torch=torch.__version__,
            machine=platform.machine(),
        )

    def paths(self, key: PackageKey) -> tuple[Path, Path]:
        """The package and its manifest."""
        stem = f"b{key.bucket}-{key.dtype}-{key.digest[:24]}"
        return self.root / f"{stem}.pt2", self.root / f"{stem}.json"

    # Loading
    def load(
        self, model: nn.Module, buckets: Sequence[int], dtype: torch.dtype, device: torch.device
    ) -> AotForward | None:
        """Every bucket's package, verified; None (compile instead) when any is missing or bad.
        ``model`` is the eager model the packages were built from, for the probe."""
        runners: dict[int, Any] = {}
        for bucket in buckets:
            key = self.key(bucket, dtype, device)
            package, manifest = self.paths(key)
            if not manifest.exists():
                return None  # not built (yet): compiling is the ordinary first start
            try:
                runners[bucket] = self._load_one(key)
            except Exception as exc:  # a bad package must never stop a start: compile instead
                log.warning("AOT package %s unusable, compiling instead: %s", package, exc)
                return None
        forward = AotForward(runners)
        try:
            self._probe(forward, model, min(buckets), dtype, device)
        except Exception as exc:
            log.warning("AOT packages in %s unusable, compiling instead: %s", self.root, exc)
            return None
        return forward

    def _load_one(self, key: PackageKey) -> Any:
        self.check(key)
        return torch._inductor.aoti_load_package(str(self.paths(key)[0]))

    def check(self, key: PackageKey) -> None:
        """Raise unless the package is there, its manifest is for ``key`` and its bytes match."""
        package, manifest = self.paths(key)
        recorded = json.loads(manifest.read_text())
        if recorded.get("key") != asdict(key):
            raise ValueError("its manifest was written for another model, precision or platform")
        digest, expected = _sha256_file(package), str(recorded.get("sha256"))
        if digest != expected:
            raise ValueError(f"checksum mismatch (sha256 {digest[:12]}..., recorded {expected[:12]}...)")

    def usable(self, key: PackageKey) -> bool:
        """Whether the package passes its checks and loads (a builder replaces one that does not)."""
        try:
            self._load_one(key)
        except Exception:
            return False
        return True

    @torch.no_grad()
    def _probe(
        self, forward: AotForward, model: nn.Module, bucket: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        """One seeded batch through a package and the eager model: they must agree."""
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(bucket, 1, 28, 28, generator=generator).to(device=device, dtype=dtype)
        got, want = forward(x).float(), model(x).float()
        tolerance = 1e-3 if dtype == torch.float32 else 5e-2
        scale = float(want.abs().max()) + 1.0
        if got.shape != want.shape or float((got - want).abs().max()) > tolerance * scale:
            raise ValueError("its logits differ from the eager model's")

    # Building
    @contextlib.contextmanager
    def lock(self) -> Iterator[bool]:
        """Yields whether this process holds the version's build lock (False: another builds it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @torch.no_grad()
    def build(self, model: nn.Module, bucket: int, dtype: torch.dtype, device: torch.device) -> Path:
        """Export, compile (frozen) and store one bucket's package; hold ``lock()`` around it."""
        key = self.key(bucket, dtype, device)
        package, manifest = self.paths(key)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{package.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.pt2"
        started = time.perf_counter()
        try:
            example = torch.zeros(bucket, 1, 28, 28, device=device, dtype=dtype)
            exported = torch.export.export(model, (example,))
            torch._inductor.aoti_compile_and_package(
                exported, package_path=str(tmp), inductor_configs={"freezing": True}
            )
            record = {"key": asdict(key), "sha256": _sha256_file(tmp), "seconds": time.perf_counter() - started}
            tmp_manifest = tmp.with_suffix(".json")
            tmp_manifest.write_text(json.dumps(record, indent=2))
            # Package first, manifest last: a manifest is only ever beside the bytes it describes.
            os.replace(tmp, package)
            os.replace(tmp_manifest, manifest)
        finally:
            tmp.unlink(missing_ok=True)
            tmp.with_suffix(".json").unlink(missing_ok=True)
        return package

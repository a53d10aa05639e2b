"""Ahead-of-time compiled models (AOTInductor packages) in the compile cache, so that a worker
start or a hot swap loads in about a second what ``torch.compile`` takes tens of seconds to build.

Inductor's FX graph cache refuses graphs with frozen weights (and int8 graphs are frozen too), so
without these every start compiles every bucket again. A package is one input shape of one part
of one version (a bucket of the digit network, or a width of the int8 line reader), frozen, for
one precision, device kind, torch version, quantizer version and machine architecture; all of
that is in its key, so a package is loaded only where it was built for.

Each package has a manifest beside it: its key, the SHA-256 of its bytes, and its output for a
seeded probe input. The builder writes the manifest only after the package's output has matched
the eager model's on that probe; a start loads a package only when the manifest matches the key,
the bytes their checksum and the package reproduces the recorded output, and otherwise compiles.
So a start never needs the eager model, which for int8 would mean quantising it (seconds).

Packages are written to a temporary name and renamed, manifest last, under a lock per version,
so two workers building at once neither corrupt each other's files nor both do the work.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
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

from recognizer.aotprune import mark_used

__all__ = ["DIGITS", "LINES", "AotForward", "PackageKey", "Packages", "device_kind", "input_dtype"]

log = logging.getLogger(__name__)

# Bump when the way packages are built changes, so older ones are never loaded.
FORMAT = 2
DIGITS, LINES = "digits", "lines"  # the parts of a version that have packages
_INPUT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.float32}


def device_kind(device: torch.device) -> str:
    """What a package's kernels were compiled for: the CPU's vector ISA, or the GPU's capability."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda-sm{major}{minor}"
    return f"cpu-{torch.backends.cpu.get_cpu_capability()}"


def input_dtype(precision: str) -> torch.dtype:
    """What a package of this precision is fed: an int8 graph quantises its float32 input itself."""
    return _INPUT_DTYPES[precision]


@functools.cache
def _quantizer_version(precision: str) -> str:
    """torchao's version for int8 packages: it decides the quantised graph the weights give."""
    if precision != "int8":
        return ""
    from importlib.metadata import version

    return version("torchao")


@dataclass(frozen=True)
class PackageKey:
    weights_sha256: str
    arch: str  # the architecture, as canonical JSON
    part: str  # DIGITS or LINES
    shape: str  # the input's shape, e.g. "128x1x28x28"
    dtype: str  # the precision: float32, bfloat16 or int8
    device: str
    torch: str
    quantizer: str
    machine: str
    format: int = FORMAT

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.shape.split("x"))


class AotForward:
    """One loaded package per input shape, called like the model (a batch's shape is always one
    the packages were built for: a bucket, or a padded width)."""

    def __init__(self, runners: dict[tuple[int, ...], Any]) -> None:
        self.runners = runners

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _first(self.runners[tuple(x.shape)](x))


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (list, tuple)) else out


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def probe_input(key: PackageKey) -> torch.Tensor:
    """The seeded input a package's output is checked on, at build and at every load."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(key.dims, generator=generator).to(input_dtype(key.dtype))


def _agrees(got: torch.Tensor, want: torch.Tensor, precision: str) -> bool:
    tolerance = 1e-3 if precision == "float32" else 5e-2
    scale = float(want.abs().max()) + 1.0
    return got.shape == want.shape and float((got - want).abs().max()) <= tolerance * scale


class Packages:
    """The packages of one model version (by the SHA-256 of its weights) in ``cache_dir/aot``."""

    def __init__(self, cache_dir: Path, weights_sha256: str, arch: dict[str, Any]) -> None:
        if not weights_sha256:
            raise ValueError("packages need the weights' SHA-256")
        self.cache_dir = cache_dir
        self.root = cache_dir / "aot" / weights_sha256[:32]
        self.weights_sha256 = weights_sha256
        self.arch = json.dumps(arch, sort_keys=True)

    def key(self, part: str, shape: Sequence[int], precision: str, device: torch.device) -> PackageKey:
        """``precision``: float32, bfloat16 or int8 (an engine's ``precision``)."""
        return PackageKey(
            weights_sha256=self.weights_sha256,
            arch=self.arch,
            part=part,
            shape="x".join(str(int(d)) for d in shape),
            dtype=precision,
            device=device_kind(device),
            torch=torch.__version__,
            quantizer=_quantizer_version(precision),
            machine=platform.machine(),
        )

    def paths(self, key: PackageKey) -> tuple[Path, Path]:
        """The package and its manifest."""
        stem = f"{key.part}-{key.shape}-{key.dtype}-{key.digest[:24]}"
        return self.root / f"{stem}.pt2", self.root / f"{stem}.json"

    # Loading
    def load(self, keys: Sequence[PackageKey]) -> AotForward | None:
        """Every key's package, verified; None (compile instead) when any is missing or bad."""
        runners: dict[tuple[int, ...], Any] = {}
        for key in keys:
            package, manifest = self.paths(key)
            if not manifest.exists():
                return None  # not built (yet): compiling is the ordinary first start
            try:
                runners[key.dims] = self._load_one(key)
            except Exception as exc:  # a bad package must never stop a start: compile instead
                log.warning("AOT package %s unusable, compiling instead: %s", package, exc)
                return None
        return AotForward(runners)

    @torch.no_grad()
    def _load_one(self, key: PackageKey) -> Any:
        """The package, once its manifest, checksum and probe output check out."""
        recorded = self.check(key)
        runner = torch._inductor.aoti_load_package(str(self.paths(key)[0]))
        want = torch.tensor(recorded.get("probe", []), dtype=torch.float32)
        if not _agrees(_first(runner(probe_input(key))).float(), want, key.dtype):
            raise ValueError("its output differs from the one recorded when it was built")
        mark_used(self.paths(key)[1])  # what keeps it from being pruned (recognizer/aotprune.py)
        return runner

    def check(self, key: PackageKey) -> dict[str, Any]:
        """The manifest; raises unless it is for ``key`` and the package's bytes match it."""
        package, manifest = self.paths(key)
        recorded: dict[str, Any] = json.loads(manifest.read_text())
        if recorded.get("key") != asdict(key):
            raise ValueError("its manifest was written for another model, precision or platform")
        digest, expected = _sha256_file(package), str(recorded.get("sha256"))
        if digest != expected:
            raise ValueError(f"checksum mismatch (sha256 {digest[:12]}..., recorded {expected[:12]}...)")
        return recorded

    def usable(self, key: PackageKey) -> bool:
        """Whether the package passes its checks and loads (a builder replaces one that does not)."""
        try:
            self._load_one(key)
        except Exception:
            return False
        return True

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
    def build(self, model: nn.Module, key: PackageKey) -> Path:
        """Export, compile (frozen), check against ``model`` (the eager model, in the key's
        precision) and store one package; hold ``lock()`` around it. Raises ValueError, storing
        nothing, when the package's output differs from the eager model's."""
        package, manifest = self.paths(key)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{package.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.pt2"
        started = time.perf_counter()
        try:
            probe = probe_input(key)
            exported = torch.export.export(model, (probe,))
            torch._inductor.aoti_compile_and_package(
                exported, package_path=str(tmp), inductor_configs={"freezing": True}
            )
            got = _first(torch._inductor.aoti_load_package(str(tmp))(probe)).float()
            if not _agrees(got, _first(model(probe)).float(), key.dtype):
                raise ValueError(f"the {key.part} package for {key.shape} computes other outputs than the eager model")
            record = {
                "key": asdict(key),
                "sha256": _sha256_file(tmp),
                "seconds": time.perf_counter() - started,
                "probe": got.tolist(),
            }
            tmp_manifest = tmp.with_suffix(".json")
            tmp_manifest.write_text(json.dumps(record))
            # Package first, manifest last: a manifest is only ever beside the bytes it describes.
            os.replace(tmp, package)
            os.replace(tmp_manifest, manifest)
        finally:
            tmp.unlink(missing_ok=True)
            tmp.with_suffix(".json").unlink(missing_ok=True)
        return package

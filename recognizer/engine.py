"""Batch inference: a compiled model with static shape buckets, warmed before it serves.

Each batch is padded up to the next bucket size, so serving only ever sees shapes that were
compiled (and warmed) at load: no request waits for a compile. Padding rows are dropped before
anything is returned. The weights of a compiled model are never changed in place (inductor's
freezing bakes them into the graph); a new version means a new Engine.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from config.settings import Settings
from recognizer import artifact, linequant, network, quantize, scan
from recognizer.aot import DIGITS as DIGIT_PACKAGES
from recognizer.aot import LINES as LINE_PACKAGES
from recognizer.aot import PackageKey, Packages
from recognizer.prediction import Prediction
from recognizer.sequence import SequenceReader, sequence_reader
from storage.registry import VersionInfo

log = logging.getLogger(__name__)

# Predictions must agree with fp32 on at least this share of held-out images for "auto" to
# pick bf16 (the trainer measures and records the agreement with each version).
BF16_MIN_AGREEMENT = 0.9995


DIGITS = 10  # classes 0-9; a field model has an 11th, "not one character" (see ``Prediction.reject``)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def bf16_capable(device: torch.device) -> bool:
    """Whether the hardware has native bf16 matrix math (CPU: AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device, bf16_agreement: float | None = None) -> torch.dtype:
    """fp32 or bf16. ``auto`` takes bf16 only where the hardware has it and, when the agreement
    with fp32 predictions was measured, where it is at least ``BF16_MIN_AGREEMENT``."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    agrees = bf16_agreement is None or bf16_agreement >= BF16_MIN_AGREEMENT
    return torch.bfloat16 if bf16_capable(device) and agrees else torch.float32


def configure_compiler(cache_dir: Path | None) -> None:
    """Process-wide inductor settings; called before the first compile."""
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Inductor reads these when it first needs its caches: a restart reuses compiled kernels.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir))
        os.environ.setdefault("TRITON_CACHE_DIR", str(cache_dir / "triton"))
    inductor_config.freezing = True
    inductor_config.fx_graph_cache = True
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
    dynamo_config.cache_size_limit = max(dynamo_config.cache_size_limit, 64)


class Engine:
    """One model replica on one device, compiled for a fixed set of batch sizes."""

    def __init__(
        self,
        model: nn.Module,
        *,
        temperature: float = 1.0,
        device: str = "cpu",
        precision: str = "auto",
        buckets: Sequence[int] = (1, 8, 32, 128),
        compile: bool = True,
        cache_dir: Path | None = None,
        version: str = "",
        bf16_agreement: float | None = None,
        cuda_graphs: bool = True,
        packages: Packages | None = None,
        calibration: torch.Tensor | None = None,
        int8_agreement: float | None = None,
        sequence: SequenceReader | None = None,
        line_int8_agreement: float | None = None,
        aot_digits: bool = True,
        int8_lines: linequant.Int8Lines | None = None,
    ) -> None:
        # cuda_graphs: a compiled engine on CUDA replays each bucket as a CUDA graph (inductor's
        # "reduce-overhead"): at small batches launch overhead, not arithmetic, is the cost.
        # Off only to measure what the graphs buy (bench/gpu.py).
        # packages: this version's AOTInductor packages (recognizer/aot.py), loaded instead of
        # compiling when every bucket has a good one (CPU only: CUDA keeps its graphs).
        # aot_digits=False compiles the digit network all the same (a worker's compile beside
        # its packages, worker/upgrade.py); an int8 line reader still loads from them.
        # int8_lines: the ready int8 line reader of another engine of this version (the one a
        # compile beside replaces), taken as it is: compiled again from a thread, its widths
        # ran 3.7x slower (BENCHMARKS.md, "The line reader in int8").
        self.version = version
        self.device = resolve_device(device)
        # int8 (recognizer/quantize.py) is calibrated on the version's prepared [0, 1] images;
        # where it is not taken, "int8" falls back to what "auto" would choose.
        calibrated = calibration is not None
        self.int8 = quantize.use_int8(precision, self.device, calibrated=calibrated, agreement=int8_agreement)
        floating = resolve_precision(precision, self.device, bf16_agreement)  # int8 asked for: what auto takes
        self.dtype = torch.float32 if self.int8 else floating
        # The version's line reader for fields (recognizer/sequence.py), when it has one: bf16
        # where the digit network serves bf16, or serves int8 on a CPU that has bf16; int8 as
        # well where the digits serve int8 and the version's lines agree (recognizer/linequant.py).
        bf16 = floating == torch.bfloat16
        self.sequence = None
        self._int8_lines: linequant.Int8Lines | None = None
        if sequence is not None:
            lines = compile and self.int8 and linequant.wanted(precision, self.device, line_int8_agreement)
            # Read with only once warm-up has compiled it (``warm``); float lines serve meanwhile.
            ready = int8_lines if lines else None
            self._int8_lines = (
                linequant.int8_lines(sequence.model, calibration, packages) if lines and not ready else None
            )
            self.sequence = sequence.to(self.device, bf16=bf16, int8=ready)
        self.buckets = tuple(sorted(set(int(b) for b in buckets)))
        self.temperature = float(temperature)
        # The engine owns its copy: casting or compiling must never touch the caller's module.
        model = copy.deepcopy(model).eval().to(self.device)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        # int8: quantised when first needed (``model``); an engine that loads its packages never is.
        self._float_model = model
        self._calibration = calibration if self.int8 else None
        floating_model = model.to(self.dtype) if self.device.type == "cpu" else model
        self._model: nn.Module | None = None if self.int8 else floating_model
        self.compiled = False
        self.cuda_graphs = compile and cuda_graphs and self.device.type == "cuda"
        self.warm_seconds = 0.0
        self.bucket_ms: dict[int, float] = {}  # measured by warm(time_buckets=True)
        # Why compilation failed and this engine serves eagerly (None: it did not fail).
        self.compile_error: str | None = None
        self.source = "eager"  # how the model runs: eager, compiled (torch.compile) or aot (packages)
        self._forward: Any = None
        if not compile:
            self._forward = self._eager  # int8: quantised at the first batch
            return
        configure_compiler(cache_dir)
        aot = None
        if packages is not None and aot_digits and self.device.type == "cpu":  # CUDA keeps its graphs
            aot = packages.load([self.package_key(packages, b) for b in self.buckets])
        if aot is not None:
            self._forward, self.compiled, self.source = aot, True, "aot"
        else:
            self._compile()

    @property
    def model(self) -> nn.Module:
        """The eager model this engine compiles or falls back to (int8: quantised on first use)."""
        if self._model is None:
            assert self._calibration is not None  # an int8 engine always has its calibration images
            self._model = quantize.quantize(self._float_model, (self._calibration - scan.MNIST_MEAN) / scan.MNIST_STD)
        return self._model

    @property
    def int8_lines(self) -> linequant.Int8Lines | None:
        """The int8 line reader, adopted (after ``warm``) or pending; None where lines are float."""
        return self._int8_lines or (self.sequence.int8 if self.sequence is not None else None)

    def compiled_parts(self) -> list[str]:
        """The parts this engine compiled that AOT packages could give the next start (CPU only)."""
        if self.device.type != "cpu":
            return []
        lines = self.int8_lines
        parts = [DIGIT_PACKAGES] if self.source == "compiled" else []
        return parts + ([LINE_PACKAGES] if lines is not None and lines.source == "compiled" else [])

    def _eager(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out

    def package_key(self, packages: Packages, bucket: int) -> PackageKey:
        """The key of this engine's AOT package for one bucket."""
        return packages.key(DIGIT_PACKAGES, (bucket, 1, 28, 28), self.precision, self.device)

    def _compile(self) -> None:
        mode = "reduce-overhead" if self.cuda_graphs else None
        self._forward = torch.compile(self.model, dynamic=False, fullgraph=True, mode=mode)
        self.compiled, self.source = True, "compiled"

    @classmethod
    def from_weights(cls, weights: bytes, arch: dict[str, Any], **kwargs: Any) -> Engine:
        model = artifact.load_into(network.build(arch), weights)
        kwargs.setdefault("calibration", artifact.calibration(weights))
        kwargs.setdefault("sequence", sequence_reader(artifact.sequence_state(weights)))
        return cls(model, **kwargs)

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else str(self.dtype).removeprefix("torch.")

    @property
    def max_batch(self) -> int:
        return self.buckets[-1]

    def describe(self) -> str:
        kind = ("compiled + CUDA graphs" if self.cuda_graphs else "compiled") if self.compiled else "eager"
        kind = "AOT-compiled (packages)" if self.source == "aot" else kind
        lines = f", fields by {self.sequence.precision} line reader" if self.sequence is not None else ""
        lines += " (packages)" if self.int8_lines is not None and self.int8_lines.source == "aot" else ""
        costs = f" ({'/'.join(f'{ms:.1f}' for ms in self.bucket_ms.values())} ms)" if self.bucket_ms else ""
        return f"{kind} {self.precision} on {self.device}, buckets {list(self.buckets)}{costs}{lines}"

    def warm(self, *, time_buckets: bool = False) -> float:
        """Run every bucket once so no request pays for a compile; returns seconds taken.

        If compilation fails, logs a warning and falls back to eager. ``time_buckets`` also
        measures each bucket's cost into ``bucket_ms`` (two more runs of each, about 0.15 s on a
        CPU): what a worker's batcher weighs; the trainer and benchmarks have no use for it. An
        int8 line reader's widths compile here too (about 2 s each on a CPU; milliseconds when
        loaded from packages), and only then does it read lines. Compiled from a background
        thread they ran 3.7 times slower (4.86 against 1.33 ms a line, one run), so they compile
        here, before the worker is ready.
        """
        start = time.perf_counter()
        again = functools.partial(self.warm, time_buckets=time_buckets)
        for size in self.buckets:
            dummy = torch.zeros(size, 1, 28, 28)
            try:
                self._run(dummy)
                if self.cuda_graphs:
                    self._run(dummy)  # CUDA graphs record on the second call
            except Exception as exc:
                if self.source == "aot":  # a package that loaded but fails to run: compile instead
                    log.warning("AOT package failed to run (%s); compiling instead", exc)
                    self._compile()
                    return again() + (time.perf_counter() - start)
                if not self.compiled:
                    raise
                self.compile_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                log.warning("torch.compile failed (%s); serving the eager model instead", self.compile_error)
                self._forward, self.compiled, self.cuda_graphs, self.source = self.model, False, False, "eager"
                return again() + (time.perf_counter() - start)
        if self._int8_lines is not None and self.sequence is not None:
            linequant.adopt(self._int8_lines, self.sequence)
            self._int8_lines = None
        if time_buckets:
            self.bucket_ms = self._time_buckets()
        self.warm_seconds = time.perf_counter() - start
        return self.warm_seconds

    def _time_buckets(self) -> dict[int, float]:
        """Milliseconds one batch of each bucket takes, warm (the better of two runs): what the
        batcher weighs when a backlog lies just above a bucket (worker/batcher.py, ``split_plan``)."""
        costs = {}
        for size in self.buckets:
            dummy = torch.zeros(size, 1, 28, 28)
            runs = []
            for _ in range(2):
                began = time.perf_counter()
                self._run(dummy)
                runs.append((time.perf_counter() - began) * 1000)
            costs[size] = min(runs)
        return costs

    def bucket_for(self, n: int) -> int:
        for size in self.buckets:
            if size >= n:
                return size
        return self.buckets[-1]

    @torch.no_grad()
    def forward_on_device(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logits, left on the device, for a batch already there whose size is a bucket.
        With CUDA graphs the next call overwrites them: copy what must outlive it."""
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16):
                return self._forward(x)
        return self._forward(x.to(self.dtype))

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits (float32, on the CPU) for one batch whose size is a bucket."""
        out = self.forward_on_device(batch.to(self.device, non_blocking=True))
        # Copy off the graph's output buffers (CUDA graphs reuse them on the next call).
        return out.float().cpu().clone()

    def logits(self, inputs: torch.Tensor | Sequence[np.ndarray]) -> torch.Tensor:
        """Temperature-scaled logits for N preprocessed inputs (N, 1, 28, 28), any N."""
        x = inputs if isinstance(inputs, torch.Tensor) else torch.from_numpy(np.stack(list(inputs)))
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"expected inputs of shape (N, 1, 28, 28), got {tuple(x.shape)}")
        outputs = []
        for start in range(0, len(x), self.max_batch):
            chunk = x[start : start + self.max_batch]
            size = self.bucket_for(len(chunk))
            if size > len(chunk):
                chunk = torch.cat([chunk, chunk.new_zeros(size - len(chunk), *chunk.shape[1:])])
            outputs.append(self._run(chunk)[: min(len(x) - start, self.max_batch)])
        if not outputs:
            return torch.empty(0, DIGITS)
        return torch.cat(outputs) / self.temperature

    def predict(self, inputs: torch.Tensor | Sequence[np.ndarray]) -> list[Prediction]:
        if len(inputs) == 0:
            return []
        probs = torch.softmax(self.logits(inputs), dim=1)
        reject = probs[:, DIGITS:].sum(dim=1)
        digits = probs[:, :DIGITS] / (1.0 - reject).clamp_min(1e-12)[:, None]
        conf, labels = digits.topk(3, dim=1)
        return [
            Prediction(int(lab[0]), float(c[0]), [(int(a), float(b)) for a, b in zip(lab, c, strict=True)], float(r))
            for lab, c, r in zip(labels.tolist(), conf.tolist(), reject.tolist(), strict=True)
        ]


def engine_for(info: VersionInfo, weights: bytes, settings: Settings, **overrides: Any) -> Engine:
    """The serving engine for a registry version, configured from the settings."""
    options: dict[str, Any] = {
        "temperature": info.temperature,
        "device": settings.device,
        "precision": settings.precision,
        "buckets": settings.buckets,
        "compile": settings.compile,
        "cache_dir": settings.path("compile_cache_dir"),
        "version": info.version,
        "bf16_agreement": info.metrics.get("bf16_agreement"),
        "packages": packages_for(info, settings),
        "int8_agreement": info.metrics.get("int8_agreement"),
        "line_int8_agreement": info.metrics.get("line_int8_agreement"),
    }
    return Engine.from_weights(weights, info.arch, **(options | overrides))


def packages_for(info: VersionInfo, settings: Settings) -> Packages | None:
    """Where this version's AOT packages live, or None when they are turned off."""
    cache_dir = settings.path("compile_cache_dir")
    if not (settings.aot_packages and settings.compile and info.sha256):
        return None
    return Packages(cache_dir, info.sha256, info.arch)

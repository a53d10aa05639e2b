"""Serve a trained sequence network: attach it to the current version, gated on held-out fields.

The candidate is the current version's file unchanged (digit network, calibration images) plus
the line reader, published as a child version. Both are scored as workers would serve them
(``recognizer.layout.read_by_layout``: free handwriting by the current reader, cells by
segmentation) on fields rendered from training digits the sequence trainer kept out. The
candidate becomes current only if it reads more of those fields exactly; otherwise it is kept as
rejected, with the figures, and nothing changes for the workers.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.synth import STYLES, DigitPool, load_mnist, render_field
from config.errors import ImageError
from config.settings import Settings
from recognizer import artifact, scan
from recognizer.engine import Engine
from recognizer.fields import FieldReading, ReaderParams
from recognizer.layout import read_by_layout
from recognizer.linequant import BATCH, Int8Lines, padded
from recognizer.lines import frames, line_input
from recognizer.sequence import best_path
from storage.registry import Registry, VersionInfo, VersionStatus
from trainer.data import validation_order

__all__ = ["GATE_KINDS", "gate_pool", "line_agreement", "publish", "score"]

log = logging.getLogger(__name__)

GATE_KINDS = ("free", "comb")  # free fields are what the line reader takes; comb must not get worse
GATE_SEED = 31  # distinct from the benchmark's field seeds (bench/fields.py)


def gate_pool(data_root: Path, val_size: int, seed: int = 0) -> DigitPool:
    """The training digits ``python -m trainer.sequence --val-size`` kept out of its fields."""
    images, labels = load_mnist(data_root, train=True)
    rows = validation_order(len(labels), seed)[:val_size].numpy()
    return DigitPool(images[rows], labels[rows])


def score(engine: Engine, pool: DigitPool, count: int) -> dict[str, float]:
    """Exact fields, in percent, per kind, read as a worker serving ``engine`` reads them."""
    out: dict[str, float] = {}
    for kind in GATE_KINDS:
        fields = [render_field(pool, (GATE_SEED, i), STYLES[kind]) for i in range(count)]
        readings = read_by_layout([f.image for f in fields], engine, engine.sequence, ReaderParams())
        right = sum(isinstance(r, FieldReading) and r.text == f.text for f, r in zip(fields, readings, strict=True))
        out[kind] = round(100 * right / count, 2)
    return out


@torch.no_grad()
def line_agreement(model: nn.Module, calibration: torch.Tensor | None, pool: DigitPool, count: int) -> float | None:
    """Share of the gate's field lines (those int8 takes) whose greedy reading is the same under
    the int8 line reader workers would build (recognizer/linequant.py) as under fp32; None
    without calibration images. The int8 copy runs eagerly, the reference quantised arithmetic
    (the trainer has no int8 hardware to count on; compiled kernels round alike)."""
    if calibration is None:
        return None
    lines = []
    for kind in GATE_KINDS:
        for i in range(count):
            with contextlib.suppress(ImageError):
                lines.append(line_input(render_field(pool, (GATE_SEED, i), STYLES[kind]).image))
    taken = [line for line in lines if Int8Lines.takes(line.width)]
    model = copy.deepcopy(model).eval().float()
    int8 = Int8Lines(model, calibration, compile=False)
    same = 0
    for start in range(0, len(taken), BATCH):
        chunk = taken[start : start + BATCH]
        x = padded(chunk)
        for line, a, b in zip(chunk, model(x).argmax(-1), int8(x).argmax(-1), strict=True):
            reading = [best_path(path[: frames(line.width)].tolist()) for path in (a, b)]
            same += [k for k, _, _ in reading[0]] == [k for k, _, _ in reading[1]]
    return same / max(1, len(taken))


def publish(settings: Settings, registry: Registry, model: nn.Module, pool: DigitPool, count: int) -> dict[str, Any]:
    """Publish the current version plus ``model`` as a child; current only if the gate passes."""
    with registry.lock(settings.lock_ttl_s, "sequence") as lease:
        parent, weights = registry.weights()
        candidate = artifact.with_sequence(weights, model)
        options: dict[str, Any] = {"temperature": parent.temperature, "compile": False, "precision": "fp32"}
        before = score(Engine.from_weights(weights, parent.arch, **options), pool, count)
        after = score(Engine.from_weights(candidate, parent.arch, **options), pool, count)
        promoted = sum(after.values()) > sum(before.values())
        agreement = line_agreement(model, artifact.calibration(weights), pool, count)
        figures = ", ".join(f"{k} {before[k]:.1f}% -> {after[k]:.1f}%" for k in GATE_KINDS)
        reason = f"exact held-out fields: {figures}" + ("" if promoted else " (not better: not made current)")
        lease.check()
        info = registry.publish(
            candidate,
            VersionInfo(
                arch=parent.arch,
                preprocess_version=scan.PREPROCESS_VERSION,
                temperature=parent.temperature,
                data_fingerprint=f"{parent.data_fingerprint}+sequence",
                # The parent's line agreement was another line reader's: this one's, or none.
                metrics={k: v for k, v in parent.metrics.items() if k != "line_int8_agreement"}
                | {f"fields_{k}_exact_before": v for k, v in before.items()}
                | {f"fields_{k}_exact": v for k, v in after.items()}
                | ({} if agreement is None else {"line_int8_agreement": agreement}),
                parent=parent.version,
                weights_source=f"sequence:{parent.version}",
                status=VersionStatus.PROMOTED if promoted else VersionStatus.REJECTED,
                reason=reason,
                training={"sequence": {"gate_fields_per_kind": count, "gate_digits": len(pool.labels)}},
                labels_upto=parent.labels_upto,
            ),
            make_current=promoted,
            token=lease.token,
            expect_current=parent.version,
            check_current=promoted,
        )
    log.info("published %s: %s", info.version, reason)
    return {"version": info.version, "parent": parent.version, "promoted": promoted, "before": before, "after": after}

"""Serve a trained sequence network: attach it to the current version, gated on held-out fields.

The candidate is the current version's file unchanged (digit network, calibration images) plus
the line reader, published as a child version. Both are scored as workers would serve them
(``recognizer.layout.read_by_layout``: free handwriting by the current reader, cells by
segmentation) on fields rendered from training digits the sequence trainer kept out. The
candidate becomes current only if it reads more of those fields exactly; otherwise it is kept as
rejected, with the figures, and nothing changes for the workers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from bench.synth import STYLES, DigitPool, load_mnist, render_field
from config.settings import Settings
from recognizer import artifact, scan
from recognizer.engine import Engine
from recognizer.fields import FieldReading, ReaderParams
from recognizer.layout import read_by_layout
from storage.registry import Registry, VersionInfo, VersionStatus
from trainer.data import validation_order

__all__ = ["GATE_KINDS", "gate_pool", "publish", "score"]

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


def publish(settings: Settings, registry: Registry, model: nn.Module, pool: DigitPool, count: int) -> dict[str, Any]:
    """Publish the current version plus ``model`` as a child; current only if the gate passes."""
    with registry.lock(settings.lock_ttl_s, "sequence") as lease:
        parent, weights = registry.weights()
        candidate = artifact.with_sequence(weights, model)
        options: dict[str, Any] = {"temperature": parent.temperature, "compile": False, "precision": "fp32"}
        before = score(Engine.from_weights(weights, parent.arch, **options), pool, count)
        after = score(Engine.from_weights(candidate, parent.arch, **options), pool, count)
        promoted = sum(after.values()) > sum(before.values())
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
                metrics=parent.metrics
                | {f"fields_{k}_exact_before": v for k, v in before.items()}
                | {f"fields_{k}_exact": v for k, v in after.items()},
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

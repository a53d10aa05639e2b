"""Train the CTC sequence network (recognizer.sequence) on fields composed from MNIST training digits.

    python -m trainer.sequence --data-root ../shared/data/mnist --fields 12000 --epochs 1.2 --out seq.safetensors
    python -m trainer.sequence ... --init seq.safetensors --lr 5e-4 --warmup 0.02 --epochs 0.5 --out seq2.safetensors
    python -m trainer.sequence ... --init seq2.safetensors --max-steps 0 --held-out 0 --publish --out seq2.safetensors

Steps: draw fields (free, comb and boxed, 1-12 digits) from the training digits outside the base
model's validation split; prepare each as the reader will (``line_input``); train with CTC loss,
lines of similar width batched together; report exact fields on held-out generated lines.
The fields are rendered once and kept in ``--cache`` (an .npz) so a second run starts at once.
With ``--publish`` the network is attached to the registry's current version, gated on fields
from the digits kept out (trainer/seqpublish.py); ``--max-steps 0`` publishes without training.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, replace
from multiprocessing import Pool
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from bench.synth import STYLES, DigitPool, FieldStyle, render_field
from config.settings import load_settings
from recognizer import scan
from recognizer.sequence import BLANK, HEIGHT, LineInput, SequenceNet, best_path, build, frames, line_input
from trainer import seqpublish
from trainer.data import load_raw, validation_order
from trainer.registry_cli import registry_for

__all__ = ["Lines", "as_ink", "digit_pool", "evaluate", "generate", "train"]

log = logging.getLogger(__name__)

# What the network learns from: a share of each kind of field.
MIX = (
    (0.40, STYLES["free"]),
    (0.15, replace(STYLES["free"], length=(1, 12))),
    (0.30, replace(STYLES["comb"], length=(3, 10))),
    (0.15, replace(STYLES["box"], length=(1, 4))),
)


@dataclass
class Lines:
    """Prepared lines as uint8 ink (0-255) of height HEIGHT and varying widths, and their texts."""

    ink: list[np.ndarray]
    texts: list[str]
    kinds: list[str]

    def save(self, path: Path) -> None:
        flat = np.concatenate([a.reshape(-1) for a in self.ink])
        widths = np.array([a.shape[1] for a in self.ink])
        np.savez(path, flat=flat, widths=widths, texts=np.array(self.texts), kinds=np.array(self.kinds))

    @classmethod
    def load(cls, path: Path) -> Lines:
        d = np.load(path)
        widths, flat = d["widths"], d["flat"]
        bounds = np.concatenate([[0], np.cumsum(widths * HEIGHT)])
        ink = [flat[a:b].reshape(HEIGHT, w) for a, b, w in zip(bounds[:-1], bounds[1:], widths, strict=True)]
        return cls(ink, [str(t) for t in d["texts"]], [str(k) for k in d["kinds"]])

    def batch(self, idx: np.ndarray) -> torch.Tensor:
        width = max(int(self.ink[i].shape[1]) for i in idx)
        x = np.zeros((len(idx), 1, HEIGHT, width), np.float32)
        for row, i in enumerate(idx):
            x[row, 0, :, : self.ink[i].shape[1]] = self.ink[i] / 255.0
        return torch.from_numpy((x - scan.MNIST_MEAN) / scan.MNIST_STD)


_WORKER: dict[str, DigitPool] = {}  # each generating process's digit pool, set once at its start


def _init(pool: DigitPool) -> None:
    _WORKER["pool"] = pool


def _one(job: tuple[int, int]) -> tuple[np.ndarray, str, str] | None:
    seed, i = job
    pick = np.random.default_rng((seed, i, 99)).random()
    style = next((s for share, s in _cumulative() if pick < share), MIX[-1][1])
    field = render_field(_WORKER["pool"], (seed, i), style)
    try:
        line = line_input(field.image)
    except Exception:  # a field whose ink the reader cannot find teaches nothing
        return None
    return as_ink(line), field.text, field.kind


def as_ink(line: LineInput) -> np.ndarray:
    """A prepared line as the uint8 ink ``Lines`` keep (the network's input, un-normalised)."""
    ink = line.x[0] * scan.MNIST_STD + scan.MNIST_MEAN
    return np.clip(np.round(ink * 255), 0, 255).astype(np.uint8)


def _cumulative() -> list[tuple[float, FieldStyle]]:
    total, out = 0.0, []
    for share, style in MIX:
        total += share
        out.append((total, style))
    return out


def generate(pool: DigitPool, count: int, seed: int, processes: int = 2) -> Lines:
    """``count`` generated fields prepared as lines (a few are dropped when no ink is found)."""
    with Pool(processes, initializer=_init, initargs=(pool,)) as workers:
        made = workers.map(_one, [(seed, i) for i in range(count)], chunksize=64)
    kept = [m for m in made if m is not None]
    return Lines([m[0] for m in kept], [m[1] for m in kept], [m[2] for m in kept])


def _batches(lines: Lines, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Lines of similar width together (little padding), the batches in random order."""
    widths = np.array([a.shape[1] for a in lines.ink])
    order = np.argsort(widths + rng.random(len(widths)) * 8, kind="stable")
    out = [order[i : i + size] for i in range(0, len(order), size)]
    rng.shuffle(out)
    return out


def _loss(model: SequenceNet, lines: Lines, idx: np.ndarray) -> torch.Tensor:
    log_probs = model(lines.batch(idx)).float().log_softmax(-1).transpose(0, 1)  # (T, N, C)
    targets = torch.tensor([int(c) for i in idx for c in lines.texts[i]])
    target_lengths = torch.tensor([len(lines.texts[i]) for i in idx])
    input_lengths = torch.tensor([frames(int(lines.ink[i].shape[1])) for i in idx])
    return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=BLANK, zero_infinity=True)


def train(
    model: SequenceNet,
    lines: Lines,
    epochs: float,
    *,
    batch: int = 16,
    lr: float = 1e-3,
    warmup: float = 0.1,
    max_steps: int | None = None,
    seed: int = 0,
) -> None:
    """AdamW with a one-cycle schedule over ``epochs`` passes (fractions allowed), ``warmup`` of
    it rising to ``lr``; ``max_steps`` stops early, partway through the schedule."""
    rng = np.random.default_rng(seed)
    planned = max(1, int(math.ceil(len(lines.texts) / batch) * epochs))
    steps = min(planned, max_steps or planned)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=planned, pct_start=warmup)
    model.train()
    step, start, recent = 0, time.perf_counter(), []
    while step < steps:
        for idx in _batches(lines, batch, rng)[: steps - step]:
            loss = _loss(model, lines, idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            step += 1
            recent.append(loss.item())
            if step % 50 == 0 or step == steps:
                took = time.perf_counter() - start
                log.info("step %d/%d loss %.4f (%.0f s)", step, steps, np.mean(recent[-50:]), took)
    model.eval()


@torch.no_grad()
def evaluate(model: SequenceNet, lines: Lines, batch: int = 64) -> dict[str, float]:
    """Exact fields, in percent, per kind of field."""
    model.eval()
    right: dict[str, list[int]] = {}
    order = np.argsort([a.shape[1] for a in lines.ink])
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        best = model(lines.batch(idx)).argmax(-1).tolist()
        for i, path in zip(idx, best, strict=True):
            text = "".join(str(k) for k, _, _ in best_path(path[: frames(int(lines.ink[i].shape[1]))]))
            tally = right.setdefault(lines.kinds[i], [0, 0])
            tally[0] += text == lines.texts[i]
            tally[1] += 1
    return {kind: round(100 * a / n, 2) for kind, (a, n) in sorted(right.items())}


def digit_pool(root: Path, val_size: int, seed: int = 0) -> DigitPool:
    """The training digits fields are drawn from: all but the first ``val_size`` of the validation order."""
    images, labels = load_raw(root, train=True)
    keep = validation_order(len(labels), seed)[val_size:].numpy()
    return DigitPool(images[keep], labels[keep])


@click.command()
@click.option("--data-root", envvar="INKQ_DATA_ROOT", required=True, type=click.Path(path_type=Path))
@click.option("--fields", type=click.IntRange(min=16), default=12000, show_default=True)
@click.option("--held-out", type=click.IntRange(min=0), default=300, show_default=True)
@click.option("--epochs", type=click.FloatRange(min=0.01), default=1.2, show_default=True)
@click.option("--val-size", type=int, default=1000, show_default=True, help="Training digits kept out of fields.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="The schedule's peak learning rate.")
@click.option("--warmup", type=float, default=0.1, show_default=True, help="Share of the schedule rising to --lr.")
@click.option("--max-steps", type=int, help="Stop after this many steps, partway through the schedule.")
@click.option("--init", type=click.Path(dir_okay=False, path_type=Path), help="Continue from these weights.")
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path), help="Keep the rendered lines here.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--publish",
    is_flag=True,
    help="Then attach it to the registry's current version (INKQ_REDIS_URL) as a child version, made "
    "current only if it reads more held-out fields exactly (trainer/seqpublish.py).",
)
@click.option("--gate-count", type=click.IntRange(min=10), default=100, show_default=True, help="Gate fields per kind.")
def main(
    data_root: Path,
    fields: int,
    held_out: int,
    epochs: float,
    val_size: int,
    lr: float,
    warmup: float,
    max_steps: int | None,
    init: Path | None,
    cache: Path | None,
    out: Path,
    publish: bool,
    gate_count: int,
) -> None:
    """Train the sequence network and save it as safetensors (and publish it, with --publish)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    pool = digit_pool(data_root, val_size, seed=0)
    torch.manual_seed(0)
    model = build()
    if init is not None:
        model.load_state_dict(load_file(str(init)))
    if max_steps != 0:
        train(model, _lines(pool, fields, cache), epochs, lr=lr, warmup=warmup, max_steps=max_steps)
    save_file(model.state_dict(), str(out))
    if held_out:
        click.echo(f"held-out exact fields: {evaluate(model, generate(pool, held_out, seed=8))}")
    if publish:
        settings = load_settings()
        outcome = seqpublish.publish(
            settings, registry_for(settings), model, seqpublish.gate_pool(data_root, val_size), gate_count
        )
        click.echo(json.dumps(outcome))


def _lines(pool: DigitPool, fields: int, cache: Path | None) -> Lines:
    """The training lines: from ``cache`` when it exists, else rendered (and kept there)."""
    if cache is not None and cache.exists():
        return Lines.load(cache)
    lines = generate(pool, fields, seed=7)
    if cache is not None:
        lines.save(cache)
    return lines


if __name__ == "__main__":
    main()

"""The MNIST images a retrain uses beside the new labels: what it is judged on, what it chooses
its pull towards the parent on, and what it replays so as not to forget. Only these are
prepared; the rest of the training split never is."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from config.settings import Settings
from trainer.data import Split, load_raw_split, validation_indices

__all__ = ["SELECTION_N", "BaseSets", "base_sets"]

SELECTION_N = 4000  # images the mixing weight is chosen on: enough that one image is 0.025 point


@dataclass(frozen=True)
class BaseSets:
    """The MNIST images a retrain uses, prepared; the rest of the training split never is."""

    heldout: Split  # (a): the base model's own validation cut, which it never trained on
    selection: Split  # to choose the mixing weight on: never replayed, not (a)
    replay: Split  # replayed beside the new labels so that the model does not forget
    fingerprint: str


def base_sets(settings: Settings, seen_upto: int, new_n: int) -> BaseSets:
    base = load_raw_split(settings.path("data_root"), train=True)
    base_train, heldout_rows = validation_indices(len(base), settings.val_size, settings.seed)
    generator = torch.Generator().manual_seed(settings.seed + seen_upto)
    order = base_train[torch.randperm(len(base_train), generator=generator)]
    replay_n = min(len(base_train) - SELECTION_N, max(settings.batch_size, round(settings.replay_ratio * new_n)))
    return BaseSets(
        heldout=base.prepared(heldout_rows),
        selection=base.prepared(order[:SELECTION_N]),
        replay=base.prepared(order[SELECTION_N : SELECTION_N + replay_n]),
        fingerprint=base.fingerprint,
    )

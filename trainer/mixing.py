"""Weight-space interpolation between a fine-tuned model and the model it started from.

Fine-tuning on something new (a labelled style, a field's cut characters) learns it fast but
drifts on what the parent already read. Mixing the two sets of weights (as WiSE-FT does) keeps
most of the new skill and little of the drift; the mix is chosen on images neither trained on.
A retrain pulls its candidate back this way (trainer/retrain.py), and its line reader too
(trainer/linetune.py). (The base model's field stage does not: mixed halfway back it read more
MNIST digits but lost most of what it had learned of free fields; BENCHMARKS.md.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from recognizer.engine import bf16_capable
from trainer.data import Split
from trainer.training import digits_of, predict_logits

__all__ = ["MIX_GRID", "interpolate_towards_parent", "pull_back", "served_accuracy"]

# Mixing weights tried, from the fine-tuned model as it is (1.0) towards the parent; below a
# quarter the fine-tuning has all but gone, so the search stops there.
MIX_GRID = (1.0, 0.8, 0.65, 0.5, 0.35, 0.25)


def served_accuracy(model: torch.nn.Module, split: Split) -> float:
    """Share read right, in the precision workers serve where the hardware has bf16: the gate and
    the pull towards the parent compare models, and those passes are most of a retrain's scoring."""
    if len(split) == 0:
        return float("nan")
    bf16 = bf16_capable(next(model.parameters()).device)
    return float((digits_of(predict_logits(model, split.images, bf16=bf16)) == split.labels).float().mean())


def interpolate_towards_parent(
    model: torch.nn.Module,
    parent: torch.nn.Module,
    selection: Split,
    max_drop: float,
) -> float:
    """Pull the fine-tuned weights back towards the parent's as little as possible: the largest
    mixing weight in ``MIX_GRID`` whose accuracy on ``selection`` is within ``max_drop`` of the
    parent's (``pull_back``). Returns the weight chosen."""
    floor = served_accuracy(parent, selection) - max_drop
    return pull_back(model, parent.state_dict(), lambda m: served_accuracy(m, selection), floor)


def pull_back(
    model: torch.nn.Module,
    parent: dict[str, torch.Tensor],
    score: Callable[[torch.nn.Module], float],
    floor: float,
) -> float:
    """Leave ``model`` at the largest weight of ``MIX_GRID`` between it (1.0) and the ``parent``
    weights whose ``score`` is at least ``floor``; the grid's last when none is. Returns the
    weight chosen.

    The score on the parent's data falls as the weight moves from the parent towards the drifted
    model, so the grid is searched by bisection: at most four scorings where a scan down the grid
    took six, each a full pass over the images."""
    tuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start = {k: v.to(tuned[k].device) for k, v in parent.items()}

    def mix(alpha: float) -> None:
        model.load_state_dict(
            {
                k: (alpha * v.float() + (1 - alpha) * start[k].float()).to(v.dtype) if v.is_floating_point() else v
                for k, v in tuned.items()
            }
        )

    def passes(alpha: float) -> bool:
        mix(alpha)
        return score(model) >= floor

    if passes(MIX_GRID[0]):
        return MIX_GRID[0]
    low, high = 1, len(MIX_GRID) - 1  # the answer lies in MIX_GRID[low:high + 1]; the last needs no check
    while low < high:
        middle = (low + high) // 2
        if passes(MIX_GRID[middle]):
            high = middle
        else:
            low = middle + 1
    mix(MIX_GRID[low])  # the model leaves holding the weights chosen
    return MIX_GRID[low]

"""A retrain's decisions without training a ResNet: the temperature it ships is fitted on the
weights it ships, after the pull back towards the parent (item 10); the pull's mixing weight is
found by bisection; the gate's three verdicts.

A linear classifier on real MNIST digits stands in for the ResNet so the tests take seconds:
``ship`` and the interpolation work on any module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from config.errors import ConfigError
from config.settings import Settings
from recognizer import artifact, network, scan
from trainer.data import Split, load_split
from trainer.mixing import MIX_GRID, interpolate_towards_parent
from trainer.retrain import ship, verdict
from trainer.training import fit_temperature, freeze, normalize, predict_logits


def linear() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))


def trained(data: Split) -> nn.Module:
    torch.manual_seed(0)
    model = linear()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        optimizer.zero_grad()
        F.cross_entropy(model(normalize(data.images)), data.labels).backward()
        optimizer.step()
    return model


def test_shipped_temperature_is_fitted_on_shipped_weights(mnist_root: Path) -> None:
    data, _ = load_split(mnist_root, train=False, limit=1200)
    train, selection, val = data.subset(slice(0, 600)), data.subset(slice(600, 900)), data.subset(slice(900, 1200))
    parent = trained(train)
    tuned = linear()
    tuned.load_state_dict(parent.state_dict())
    torch.manual_seed(1)
    with torch.no_grad():  # a "fine-tuned" model that drifted from its parent and grew overconfident
        for p in tuned.parameters():
            p.mul_(3).add_(torch.randn_like(p) * p.std())
    before_mix = fit_temperature(predict_logits(tuned, val.images), val.labels)  # what used to ship

    mix, temperature = ship(tuned, parent, selection, val)
    shipped = artifact.load_into(linear(), artifact.dump(tuned))  # the bytes a retrain publishes
    logits = predict_logits(shipped, val.images)
    assert mix in MIX_GRID and mix < 1.0  # the pull towards the parent happened
    assert temperature == fit_temperature(logits, val.labels)
    assert abs(temperature - before_mix) > 0.05
    assert F.cross_entropy(logits / temperature, val.labels) < F.cross_entropy(logits / before_mix, val.labels)


class Threshold(nn.Module):
    """Reads image i right while its one weight stays below the threshold written in its first
    pixel: base accuracy falls steadily as the weight moves from 0 (parent) to 1 (fine-tuned)."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(weight))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        threshold = x[:, 0, 0, 0] * scan.MNIST_STD + scan.MNIST_MEAN  # undo normalize()
        return torch.stack([threshold - self.weight, torch.zeros_like(threshold)], 1)


def test_mixing_weight_is_the_largest_that_keeps_base_accuracy_found_by_bisection() -> None:
    n = 100
    images = torch.zeros(n, 1, 28, 28)
    images[:, 0, 0, 0] = (torch.arange(n) + 0.5) / n  # accuracy at weight w is 1 - w
    selection = Split(images, torch.zeros(n, dtype=torch.long))
    for max_drop, expected in ((1.0, 1.0), (0.81, 0.8), (0.7, 0.65), (0.55, 0.5), (0.3, 0.25), (0.1, 0.25)):
        tuned = Threshold(1.0)
        chosen = interpolate_towards_parent(tuned, Threshold(0.0), selection, max_drop)
        assert chosen == expected, max_drop
        assert float(tuned.weight) == pytest.approx(chosen)  # the model holds the weights chosen
        assert tuned.calls <= 4  # bisection: at most four scorings of the selection images, not six


def test_the_gate_wants_a_gain_on_held_out_labels_and_little_loss_on_the_base() -> None:
    settings = Settings(promote_min_gain=0.01, base_tolerance=0.002)

    def scores(new: float, base: float) -> dict[str, float]:
        return {"new_heldout_accuracy": new, "base_heldout_accuracy": base}

    assert verdict(settings, scores(0.80, 0.990), scores(0.90, 0.989)) == (
        True,
        "held-out labels 0.8000 -> 0.9000, base 0.9900 -> 0.9890",
    )
    promoted, reason = verdict(settings, scores(0.80, 0.99), scores(0.805, 0.99))
    assert not promoted and reason.startswith("not better on held-out labels") and "above 0.01" in reason
    promoted, reason = verdict(settings, scores(0.80, 0.990), scores(0.95, 0.985))
    assert not promoted and reason.startswith("worse on the base held-out set") and "tolerance 0.002" in reason


def test_frozen_stages_take_no_step_and_the_rest_do() -> None:
    torch.manual_seed(0)
    model = network.build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frozen = freeze(model, 1)
    assert frozen and all(n.startswith(("conv1", "bn1", "layer1")) for n in frozen)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    F.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.tensor([1, 2, 3, 4])).backward()
    optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(after[n], before[n]) for n in frozen)
    assert not torch.equal(after["layer2.0.conv1.weight"], before["layer2.0.conv1.weight"])
    assert freeze(network.build(), 0) == []
    with pytest.raises(ConfigError, match="at most 3"):
        freeze(model, 4)

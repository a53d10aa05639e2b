"""The network and its starting weights: none, ImageNet (offline, from a local file), a path."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from config import WeightsUnavailableError
from recognizer import network


@pytest.fixture()
def torch_hub(tmp_path: Path) -> Iterator[Path]:
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


def imagenet_like_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.resnet18().state_dict()  # 3 channels, 1000 classes, 7x7 stem


@pytest.mark.parametrize("stem", network.STEMS)
def test_every_stem_gives_ten_logits(stem: str) -> None:
    model = network.build({"stem": stem}).eval()
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_imagenet_weights_from_local_cache(torch_hub: Path) -> None:
    state = imagenet_like_state()
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    (torch_hub / "checkpoints").mkdir(parents=True)
    torch.save(state, torch_hub / "checkpoints" / url.rsplit("/", 1)[-1])
    model = network.build()
    source = network.initialise(model, "imagenet")
    assert source.startswith("imagenet:")
    own = model.state_dict()
    assert torch.equal(own["layer3.0.conv1.weight"], state["layer3.0.conv1.weight"])
    # conv1: RGB collapsed to one channel, the 7x7 kernel area-averaged down to the 3x3 stem.
    expected = torch.nn.functional.adaptive_avg_pool2d(state["conv1.weight"].sum(1, keepdim=True), 3) * 49 / 9
    assert torch.allclose(own["conv1.weight"], expected)
    assert own["fc.weight"].shape == (10, 512)  # classifier freshly initialised


def test_imagenet_offline_fails_clearly(torch_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    # Simulate a machine without a network, whatever this one has: nothing is downloaded.
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(torch.hub, "urlopen", offline)
    with pytest.raises(WeightsUnavailableError, match=r"cannot get ImageNet weights.*--weights"):
        network.initialise(network.build(), "imagenet")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_from_a_file(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(1)
    source = network.build()
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)
    model = network.build()
    network.initialise(model, str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_missing_or_foreign_weights_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        network.initialise(network.build(), str(tmp_path / "nope.pth"))
    foreign = tmp_path / "foreign.safetensors"
    save_file({"something.else": torch.zeros(3)}, str(foreign))
    with pytest.raises(WeightsUnavailableError, match="do not fit"):
        network.initialise(network.build(), str(foreign))

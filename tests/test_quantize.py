"""int8 serving: calibration images travel with the weights, the int8 engine predicts what fp32
predicts on real digits, and ``auto`` takes int8 only where hardware and measured agreement allow."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recognizer import artifact, network, quantize
from recognizer.engine import Engine
from tests.conftest import MnistArrays


def test_auto_takes_int8_only_on_int8_hardware_with_measured_agreement() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    good, bad = quantize.INT8_MIN_AGREEMENT, quantize.INT8_MIN_AGREEMENT - 0.0005

    def auto(**kw: object) -> bool:
        args: dict[str, object] = {"calibrated": True, "agreement": good, "capable": True} | kw
        return quantize.use_int8("auto", cpu, **args)  # type: ignore[arg-type]

    assert auto()
    assert not auto(capable=False)  # no VNNI or AMX: int8 kernels gain nothing
    assert not auto(agreement=bad)
    assert not auto(agreement=None)  # never measured: not taken on trust
    assert not auto(calibrated=False)  # nothing to calibrate on
    assert not quantize.use_int8("auto", cuda, calibrated=True, agreement=good, capable=True)
    # Asked for explicitly, int8 is built wherever it can be, whatever the hardware.
    assert quantize.use_int8("int8", cpu, calibrated=True, agreement=None, capable=False)
    assert not quantize.use_int8("int8", cpu, calibrated=False, agreement=None)
    for other in ("fp32", "bf16"):
        assert not quantize.use_int8(other, cpu, calibrated=True, agreement=good, capable=True)


def test_calibration_images_travel_with_the_weights_and_do_not_disturb_loading() -> None:
    torch.manual_seed(0)
    model = network.build()
    images = torch.rand(1000, 1, 28, 28)
    sample = quantize.calibration_sample(images, 16)
    assert torch.equal(sample[0], images[0]) and torch.equal(sample[-1], images[-1]) and len(sample) == 16
    data = artifact.dump(model, sample)
    stored = artifact.calibration(data)
    assert stored is not None and stored.shape == (16, 1, 28, 28)
    assert (stored - sample).abs().max() <= 0.5 / 255 + 1e-6  # kept as uint8
    loaded = artifact.load_into(network.build(), data)
    pairs = zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert artifact.calibration(artifact.dump(model)) is None


@pytest.mark.slow
def test_int8_engine_agrees_with_fp32_on_real_digits(
    small_model: tuple[bytes, dict[str, object]], mnist_root: Path, mnist_test: MnistArrays
) -> None:
    from trainer.data import load_split, prepare_all
    from trainer.training import normalize

    weights, _ = small_model
    train, _ = load_split(mnist_root, train=True, limit=2000)
    calibrated = artifact.dump(artifact.load_into(network.build(), weights), quantize.calibration_sample(train.images))
    # Eager: this checks the quantisation; the bench's smoke run (tests/test_bench.py) compiles it.
    int8 = Engine.from_weights(calibrated, network.DEFAULT_ARCH, precision="int8", compile=False, buckets=(100,))
    fp32 = Engine.from_weights(calibrated, network.DEFAULT_ARCH, precision="fp32", compile=False, buckets=(100,))
    assert int8.int8 and "int8" in int8.describe() and not fp32.int8
    x = normalize(prepare_all(mnist_test[0][:300]))
    agree = float((int8.logits(x).argmax(1) == fp32.logits(x).argmax(1)).float().mean())
    assert agree >= 0.99, agree

"""Static int8 quantisation for CPU serving: PT2E with the x86 Inductor quantizer (torchao).

The network is exported, observed on calibration images, and converted: every convolution and
the classifier get int8 weights (one scale per output channel) and int8 inputs (one scale per
tensor, from what the observers saw). Compiled by inductor with freezing, the quantise /
dequantise pairs fuse into oneDNN int8 kernels, which use VNNI or AMX where the CPU has them.

Calibration images travel with each version, inside its safetensors file (see
``recognizer/artifact.py``): a worker has no training data, and calibrating at load on the same
images with the same weights gives the same scales on every worker, so nothing but images and
weights has to be stored (no pickled graph). The trainer picks them from the training split and
records how often the int8 model agrees with fp32 on its validation split (``int8_agreement``).
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

__all__ = [
    "CALIBRATION_N",
    "INT8_MIN_AGREEMENT",
    "calibration_sample",
    "int8_agreement",
    "int8_capable",
    "quantize",
    "use_int8",
]

log = logging.getLogger(__name__)

# Predictions must agree with fp32 on at least this share of held-out images for "auto" to pick
# int8: at most 0.05% of answers change, so accuracy cannot drop by more than issue 12's 0.05 point.
INT8_MIN_AGREEMENT = 0.9995
# Training images a version carries for calibration: 256 observers' worth of ranges is plenty for
# per-tensor activation scales, and costs 200 KB beside 45 MB of weights.
CALIBRATION_N = 256
_EXPORT_BATCH = 8


def int8_capable(device: torch.device) -> bool:
    """Whether the CPU has int8 dot-product instructions (AVX512-VNNI or AMX). Without them int8
    gained well short of 2x over compiled fp32 (BENCHMARKS.md, "int8 on the CPU"), so ``auto``
    leaves it to be asked for there."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return bool(torch.cpu._is_vnni_supported() or torch.cpu._is_amx_tile_supported())


def use_int8(
    precision: str,
    device: torch.device,
    *,
    calibrated: bool,
    agreement: float | None,
    capable: bool | None = None,
    minimum: float = INT8_MIN_AGREEMENT,
) -> bool:
    """Whether an engine serves int8. ``int8`` asks for it wherever it can be built (a CPU and a
    version with calibration images); ``auto`` takes it only on int8 hardware and when the version's
    measured agreement with fp32 is at least ``minimum`` (unmeasured: no)."""
    if precision not in ("int8", "auto") or device.type != "cpu" or not calibrated:
        if precision == "int8":
            log.warning("int8 needs a CPU and a version with calibration images (trained by this code); not int8")
        return False
    if precision == "int8":
        return True
    hardware = int8_capable(device) if capable is None else capable
    return hardware and agreement is not None and agreement >= minimum


def calibration_sample(images: torch.Tensor, n: int = CALIBRATION_N) -> torch.Tensor:
    """``n`` images spread evenly over ``images`` (prepared, [0, 1]): deterministic, and every
    part of a shuffled training split alike."""
    index = torch.linspace(0, len(images) - 1, steps=min(n, len(images))).round().long()
    return images[index].contiguous()


def quantize(model: nn.Module, calibration: torch.Tensor, *, channels_last: bool = False) -> nn.Module:
    """An int8 copy of ``model`` (eval mode), calibrated on ``calibration``: normalised inputs,
    shape (N, 1, 28, 28). Its input and output stay float32."""
    # torchao is imported here: it costs seconds, and only int8 engines need it.
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model = copy.deepcopy(model).eval().float()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    example = torch.zeros(_EXPORT_BATCH, *calibration.shape[1:])
    # strict=True: the quantizer finds conv-add-relu patterns by each call's source, and a
    # non-strict export names both calls of a ResNet block's shared ReLU alike.
    exported = torch.export.export(
        model, (example,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},), strict=True
    ).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for start in range(0, len(calibration), 64):
            prepared(calibration[start : start + 64])
    converted: nn.Module = convert_pt2e(prepared)
    return converted


@torch.no_grad()
def int8_agreement(
    model: nn.Module, calibration: torch.Tensor, images: torch.Tensor, fp32: torch.Tensor, batch: int = 500
) -> float:
    """Share of ``images`` (normalised) on which the int8 model predicts ``fp32``, the digits
    the float model predicts on them (the caller has them already). Measured eagerly (reference
    quantised arithmetic), as the trainer has no int8 hardware to count on; the compiled kernels
    round alike, and the bench measures them too."""
    int8 = quantize(copy.deepcopy(model).eval().float(), calibration)
    same = 0
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        same += int((fp32[start : start + batch] == int8(chunk)[:, :10].argmax(1)).sum())
    return same / max(1, len(images))

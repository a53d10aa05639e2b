"""The inference engine: compiled, bucketed predictions equal eager ones; padding never leaks."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recognizer import artifact, network
from recognizer.aot import Packages
from recognizer.engine import Engine, resolve_precision
from tests.conftest import MnistArrays, wait_for
from worker.packages import PackageBuilds

pytestmark = pytest.mark.slow


def digits(mnist_test: tuple[np.ndarray, np.ndarray], n: int, start: int = 0) -> torch.Tensor:
    from trainer.data import prepare_all
    from trainer.training import normalize

    return normalize(prepare_all(mnist_test[0][start : start + n]))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = network.build().eval()
    # Non-trivial batch-norm statistics, so that the eval-mode network is not near the identity.
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d) and mod.running_mean is not None and mod.running_var is not None:
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="module")
def compiled(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    engine = Engine(
        model,
        precision="fp32",
        buckets=(1, 4, 8),
        compile=True,
        cache_dir=tmp_path_factory.mktemp("cache"),
        temperature=1.5,
    )
    engine.warm(time_buckets=True)
    assert engine.compiled, "torch.compile fell back to eager"
    return engine


@pytest.fixture(scope="module")
def eager(model: torch.nn.Module) -> Engine:
    return Engine(model, precision="fp32", buckets=(1, 4, 8), compile=False, temperature=1.5)


def test_warming_times_every_bucket(compiled: Engine) -> None:
    # What the batcher weighs when a backlog lies just above a bucket (worker/batcher.py).
    assert sorted(compiled.bucket_ms) == list(compiled.buckets)
    assert all(ms > 0 for ms in compiled.bucket_ms.values())
    assert " ms)" in compiled.describe()


def test_compiled_bucketed_logits_equal_eager(compiled: Engine, eager: Engine, mnist_test: MnistArrays) -> None:
    x = digits(mnist_test, 8)
    assert torch.allclose(compiled.logits(x), eager.logits(x), atol=1e-3, rtol=1e-3)


def test_padding_never_leaks(compiled: Engine, mnist_test: MnistArrays) -> None:
    x = digits(mnist_test, 8)
    alone = torch.cat([compiled.logits(x[i : i + 1]) for i in range(3)])
    padded = compiled.logits(x[:3])  # bucket 4: one padding row
    assert padded.shape == (3, 10)
    assert torch.allclose(padded, alone, atol=1e-3, rtol=1e-3)
    assert len(compiled.predict(x[:3])) == 3


def test_batch_of_one_and_above_largest_bucket(compiled: Engine, eager: Engine, mnist_test: MnistArrays) -> None:
    x = digits(mnist_test, 21)  # 8 + 8 + 5 (padded to 8)
    one = compiled.predict(x[:1])
    many = compiled.predict(x)
    reference = eager.predict(x)
    assert len(one) == 1 and len(many) == 21
    assert [p.label for p in many] == [p.label for p in reference]
    assert one[0].label == reference[0].label


def test_predictions_are_calibrated_probabilities(compiled: Engine, mnist_test: MnistArrays) -> None:
    for p in compiled.predict(digits(mnist_test, 5)):
        assert 0 < p.confidence <= 1
        assert p.top3[0] == (p.label, p.confidence)
        assert [c for _, c in p.top3] == sorted((c for _, c in p.top3), reverse=True)
        assert len({label for label, _ in p.top3}) == 3


def test_empty_input(compiled: Engine) -> None:
    assert compiled.predict(torch.empty(0, 1, 28, 28)) == []


def test_wrong_shape_is_rejected(compiled: Engine) -> None:
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        compiled.logits(torch.zeros(2, 3, 28, 28))


def test_compile_failure_falls_back_to_eager(model: torch.nn.Module, caplog: pytest.LogCaptureFixture) -> None:
    engine = Engine(model, precision="fp32", buckets=(2,), compile=True, cache_dir=None)

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("inductor exploded")

    engine._forward = broken
    engine.warm()
    assert not engine.compiled
    assert "serving the eager model instead" in caplog.text
    assert len(engine.predict(torch.zeros(3, 1, 28, 28))) == 3


@pytest.mark.timeout(900)
def test_a_second_start_loads_the_packages_built_after_the_first(
    model: torch.nn.Module, compiled: Engine, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    # What a worker does after compiling a version: build its packages in a background process.
    weights = artifact.dump(model)
    packages = Packages(tmp_path, hashlib.sha256(weights).hexdigest(), dict(network.DEFAULT_ARCH))
    # A retired version's package nobody loaded for a month: the builder prunes it afterwards.
    retired = tmp_path / "aot" / ("b" * 32) / "digits-4x1x28x28-float32-old.json"
    retired.parent.mkdir(parents=True)
    retired.write_text("{}")
    retired.with_suffix(".pt2").write_bytes(b"PK")
    month_ago = time.time() - 30 * 86400
    for path in (retired, retired.with_suffix(".pt2")):
        os.utime(path, (month_ago, month_ago))
    builds = PackageBuilds(keep_days=14)
    builds.start(packages, weights, "v1", (4,), "float32")
    wait_for(lambda: not str(builds.status).startswith("building"), 800, "the package build", interval=0.5)
    assert str(builds.status).startswith("built v1"), builds.status
    assert not retired.parent.exists() and packages.root.exists()
    # The next start loads them instead of compiling, and predicts what the compiled engine does.
    engine = Engine(model, precision="fp32", buckets=(4,), cache_dir=tmp_path, temperature=1.5, packages=packages)
    assert engine.source == "aot" and engine.compiled and "AOT" in engine.describe()
    engine.warm()
    x = digits(mnist_test, 11)  # 4 + 4 + 3 (padded to 4)
    assert torch.allclose(engine.logits(x), compiled.logits(x), atol=1e-3, rtol=1e-3)
    assert [p.label for p in engine.predict(x)] == [p.label for p in compiled.predict(x)]
    # A bucket without a package: the engine compiles (every bucket, as before packages).
    assert Engine(model, precision="fp32", buckets=(2, 4), compile=True, packages=packages).source == "compiled"


def test_bf16_compiled_agrees_with_fp32(model: torch.nn.Module, mnist_test: MnistArrays, tmp_path: Path) -> None:
    if resolve_precision("auto", torch.device("cpu")) != torch.bfloat16:
        pytest.skip("this CPU has no native bf16")
    x = digits(mnist_test, 64)
    bf16 = Engine(model, precision="bf16", buckets=(64,), compile=True, cache_dir=tmp_path)
    bf16.warm()
    fp32 = Engine(model, precision="fp32", buckets=(64,), compile=False)
    agree = (bf16.logits(x).argmax(1) == fp32.logits(x).argmax(1)).float().mean()
    assert agree >= 0.9


def test_auto_precision_respects_measured_agreement() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == torch.float32
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    assert resolve_precision("auto", cpu, bf16_agreement=0.99) == torch.float32


def test_an_eleven_class_model_reads_digits_and_reports_reject_apart(
    model: torch.nn.Module, mnist_test: MnistArrays
) -> None:
    from trainer.fieldstage import widen

    wide = widen(model).eval()
    fc = wide.fc
    assert isinstance(fc, torch.nn.Linear)
    with torch.no_grad():
        fc.bias[10] += 8.0  # "not one character" now likely for every input
    engine = Engine(wide, precision="fp32", buckets=(1, 4, 8), compile=False, temperature=1.5)
    x = digits(mnist_test, 6)
    logits = engine.logits(x)
    assert logits.shape == (6, 11)
    probs = torch.softmax(logits, dim=1)
    for p, row in zip(engine.predict(x), probs, strict=True):
        assert 0 <= p.label < 10 and p.label == int(row[:10].argmax())
        assert p.reject == pytest.approx(float(row[10]), abs=1e-6) and p.reject > 0.5
        # Among digits alone: the top three sum to at most one, and the best is renormalised.
        assert p.confidence == pytest.approx(float(row[p.label] / row[:10].sum()), abs=1e-5)
        assert sum(c for _, c in p.top3) <= 1.0 + 1e-6
    # Widening keeps the ten digits' logits: the same best digit as the ten-class model.
    ten = Engine(model, precision="fp32", buckets=(1, 4, 8), compile=False, temperature=1.5)
    assert [p.label for p in ten.predict(x)] == [p.label for p in engine.predict(x)]

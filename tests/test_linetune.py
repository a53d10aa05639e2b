"""The line reader learns from labelled fields: labelled field images become training lines, a
fine-tuned reader is adopted only when the gate says so, and a retrain without a line reader or
without labelled fields leaves it alone. Real Redis, real generated fields, real (short) training;
the gate's scores are scripted where a branch of the decision is the point."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path

import pytest
import torch

from bench.synth import STYLES, DigitPool, load_mnist, outlined, render_field, write_digits
from config import Settings
from recognizer import artifact
from recognizer.sequence import HEIGHT, build
from storage.connection import connect
from storage.keys import Keys
from storage.labels import Labels
from storage.registry import Registry, VersionInfo
from tests.conftest import BIN
from tests.models import untrained_weights
from trainer import linetune


@pytest.fixture(scope="module")
def pool(mnist_root: Path) -> DigitPool:
    return DigitPool(*load_mnist(mnist_root, train=True))


def png(field: object) -> bytes:
    out = io.BytesIO()
    field.pil().save(out, format="PNG")  # type: ignore[attr-defined]
    return out.getvalue()


def stored(redis_url: str, pool: DigitPool, texts: list[str], style: str = "free") -> Labels:
    labels = Labels(connect(redis_url), Keys())
    samples: list[tuple[str, bytes, int | str, str]] = []
    for i, text in enumerate(texts):
        data = png(render_field(pool, (12, i), STYLES[style], text=text))
        samples.append((hashlib.sha256(data).hexdigest(), data, text, f"f{i}.png"))
    labels.add(samples, "test")
    return labels


def test_labelled_fields_become_lines_with_their_texts(redis_url: str, pool: DigitPool) -> None:
    labels = stored(redis_url, pool, ["90210", "4417", "123"])
    labels.add([("d" * 64, b"not an image", "55", "broken.png")], "test")
    lines = linetune.labelled_lines(labels, labels.all(), Settings())
    assert lines.texts == ["90210", "4417", "123"]  # the broken image is skipped, not fatal
    assert lines.kinds == ["free"] * 3
    assert all(a.shape[0] == HEIGHT and a.dtype.name == "uint8" and a.max() > 100 for a in lines.ink)


@pytest.mark.parametrize(
    ("scores", "adopted", "mix", "words"),
    [
        ([40.0, 60.0, 70.0, 69.5], True, 1.0, "line reader: held-out labelled fields 40.0% -> 60.0%"),
        ([40.0, 40.0, 70.0, 71.0], False, 1.0, "line reader not better"),
        ([40.0, 60.0, 70.0, 60.0], False, 0.25, "line reader worse on generated fields"),
    ],
)
def test_the_gate_adopts_a_reader_only_when_better_and_no_worse_on_generated_fields(
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    pool: DigitPool,
    mnist_root: Path,
    scores: list[float],
    adopted: bool,
    mix: float,
    words: str,
) -> None:
    labels = stored(redis_url, pool, ["31", "4417", "90210", "81", "562"])
    lines = linetune.labelled_lines(labels, labels.all(), Settings())
    held_before, held_after, generated_before, generated_after = scores
    calls: dict[int, int] = {}

    def exact(model: object, judged: object) -> float:
        """Each set's first reading is the parent's, every later one the tuned reader's."""
        first = calls.setdefault(id(judged), 0) == 0
        calls[id(judged)] += 1
        if judged is lines:
            return held_before if first else held_after
        return generated_before if first else generated_after  # the guard and the mixing weight's set

    monkeypatch.setattr(linetune, "_exact", exact)
    monkeypatch.setattr(linetune, "MIN_REPLAY", 16)
    monkeypatch.setattr(linetune, "GUARD_FIELDS", 4)
    torch.manual_seed(0)
    parent = build().state_dict()
    settings = Settings(data_root=str(mnist_root), retrain_line_steps=2)
    out = linetune.tune_lines(settings, parent, lines, lines, seed=3)
    assert out.adopted is adopted and words in out.reason, out.reason
    assert out.figures == {
        "held_before": held_before,
        "guard_before": generated_before,
        "held_after": held_after,
        "guard_after": generated_after,
        "mix": mix,  # pulled all the way back to the grid's end when no weight holds up
    }
    if adopted:
        assert out.state is not None and not torch.equal(out.state["fc.weight"], parent["fc.weight"])
    else:
        assert out.state is None


def test_nothing_is_tried_without_a_line_reader_or_without_labelled_fields(redis_url: str, pool: DigitPool) -> None:
    labels = stored(redis_url, pool, ["4417", "90210"])
    samples = labels.all()
    plain = untrained_weights(0)
    assert linetune.line_half(Settings(), labels, plain, samples, samples, 0).reason == ""
    with_reader = artifact.with_sequence(plain, build())
    assert linetune.line_half(Settings(), labels, with_reader, [], samples, 0).reason == ""
    none_held = linetune.tune_lines(
        Settings(),
        build().state_dict(),
        linetune.labelled_lines(labels, samples, Settings()),
        linetune.labelled_lines(labels, [], Settings()),
        0,
    )
    assert not none_held.adopted and "no held-out labelled fields" in none_held.reason


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_retrain_on_labelled_fields_runs_both_halves_and_keeps_a_line_reader(
    env: dict[str, str],
    redis_url: str,
    small_model: tuple[bytes, dict[str, object]],
    mnist_root: Path,
    pool: DigitPool,
    tmp_path: Path,
) -> None:
    weights, meta = small_model
    torch.manual_seed(0)
    reader = build()  # untrained: a few steps will not make it read, so the gate must keep it out
    registry = Registry(connect(redis_url), Keys())
    registry.publish(artifact.with_sequence(weights, reader), VersionInfo(**meta))  # type: ignore[arg-type]
    folder = tmp_path / "fields"
    folder.mkdir()
    rows = ["path,text"]
    for i in range(30):
        field = render_field(pool, (13, i), STYLES["comb" if i % 2 else "free"])
        field.pil().save(folder / f"f{i}.png")
        rows.append(f"f{i}.png,{field.text}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    assert run_cli(env, "producer", "label", "--csv", str(folder / "labels.csv")).returncode == 0
    # Digits in a new style too, so that the digit half is promoted and the version published is kept.
    write_digits(tmp_path / "style", pool.images[6000:6200], pool.labels[6000:6200], style=outlined, by_label=True)
    assert run_cli(env, "producer", "label", str(tmp_path / "style")).returncode == 0
    knobs = {"INKQ_DATA_ROOT": str(mnist_root), "INKQ_RETRAIN_LINE_STEPS": "3", "INKQ_RETRAIN_EPOCHS": "2"}
    knobs["INKQ_BASE_TOLERANCE"] = "0.05"  # a small model drifts on MNIST; the base gate is not the point here
    # A retrain takes about a minute on an AVX512 CPU and over five on a busy AVX2-only one.
    run = run_cli(env | knobs, "trainer", "retrain", "--json", timeout=1000)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.splitlines()[-1])
    lines = summary["line_reader"]
    assert not lines["adopted"] and "line reader not better" in lines["reason"], lines
    assert lines["reason"] in summary["reason"]
    assert set(lines) >= {"held_before", "held_after", "guard_before", "guard_after"}
    assert summary["phase_seconds"]["line_reader"] > 0  # the line half ran
    assert summary["promoted"], summary  # by the digit half: the outlined digits
    info, published = registry.weights(summary["version"])
    kept = artifact.sequence_state(published)  # whatever the digit verdict, the parent's reader stays
    assert kept is not None and all(torch.equal(kept[k], v) for k, v in reader.state_dict().items())
    # ... with new calibration digits beside it: its int8 agreement is measured again, for them.
    assert 0.0 <= info.metrics["line_int8_agreement"] <= 1.0 and summary["phase_seconds"]["line_int8_agreement"] > 0


def run_cli(env: dict[str, str], program: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / program), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )

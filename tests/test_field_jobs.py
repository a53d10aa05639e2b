"""Field jobs end to end with real parts: `producer submit --field` with a rule, a real worker
reading comb-box fields, the documented field result, CSV, a corrupt file failing alone, and free
fields going to the version's line reader when it has one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench.synth import STYLES, DigitPool, load_mnist, render_field
from recognizer import artifact
from recognizer.rules import luhn_ok
from recognizer.sequence import build
from storage.connection import connect
from storage.keys import Keys
from storage.registry import Registry, VersionInfo
from tests.conftest import BIN, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def producer(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "producer"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def luhn_texts(count: int, rng: np.random.Generator) -> list[str]:
    """5-digit strings whose last digit is their Luhn check digit."""
    out: list[str] = []
    while len(out) < count:
        head = "".join(str(d) for d in rng.integers(0, 10, size=4))
        out += [head + str(d) for d in range(10) if luhn_ok(head + str(d))][:1]
    return out


def test_comb_fields_are_read_whole_under_their_rule(
    env: dict[str, str], worker: WorkerProcess, mnist_root: Path, tmp_path: Path
) -> None:
    pool = DigitPool(*load_mnist(mnist_root, train=False))
    folder = tmp_path / "fields"
    folder.mkdir()
    truth: dict[str, str] = {}
    for i, text in enumerate(luhn_texts(16, np.random.default_rng(3))):
        field = render_field(pool, (77, i), STYLES["comb"], text=text)
        field.pil().save(folder / f"zip-{i:02d}.png")
        truth[str(folder / f"zip-{i:02d}.png")] = text
    good = (folder / "zip-00.png").read_bytes()
    (folder / "torn.png").write_bytes(good[: len(good) // 2])  # a valid header, broken data

    run = producer(env, "submit", str(folder), "--field", "--length", "5", "--check", "luhn", "--json")
    assert run.returncode == 0, run.stderr
    job = json.loads(run.stdout.strip().splitlines()[-1])["job"]
    out = producer(env, "results", job, "--wait", "--timeout", "150", "--format", "jsonl")
    assert out.returncode == 0, out.stderr + worker.log()
    rows: dict[str, dict[str, Any]] = {r["item"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert set(rows) == set(truth) | {str(folder / "torn.png")}  # every item, once

    torn = rows.pop(str(folder / "torn.png"))
    assert torn["kind"] == "field" and torn["text"] is None and "truncated or corrupt" in torn["error"]
    exact = 0
    for item, r in rows.items():
        assert r["error"] is None and r["kind"] == "field" and r["layout"] == "comb", r
        assert len(r["chars"]) == len(r["text"]) and r["label"] is None  # five characters, no single label
        for c in r["chars"]:
            x0, y0, x1, y1 = c["box"]
            assert 0 <= x0 < x1 and 0 <= y0 < y1 and c["top3"][0][0] in (c["label"], c.get("read_as"))
        assert r["confidence"] == pytest.approx(float(np.prod([c["confidence"] for c in r["chars"]])), abs=1e-5)
        if r["rule"]["ok"]:
            assert luhn_ok(r["text"])
            for change in r["rule"]["changed"]:  # a substitution is reported where it was made
                assert r["chars"][change["index"]]["read_as"] == change["read"]
        else:
            assert r["review"] and r["review_reasons"][0].startswith("rule: "), r
        exact += r["text"] == truth[item]
    # The small test model reads most characters; the rule turns near misses into exact fields.
    assert exact >= len(rows) // 2, {item: (r["text"], truth[item]) for item, r in rows.items()}

    csv_rows = producer(env, "results", job, "--format", "csv").stdout.splitlines()
    assert csv_rows[0] == "item,text,confidence,review,model_version,error" and len(csv_rows) == 18


def test_rules_are_checked_before_anything_is_queued(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"not needed")
    for args, words in (
        (["--length", "5"], "add --field"),
        (["--field", "--length", "9-3"], "shortest first"),
        (["--field", "--pattern", "(["], "not a regular expression"),
    ):
        run = producer(env, "submit", str(tmp_path), *args, timeout=60)
        assert run.returncode == 2 and words in run.stderr, run.stderr


def test_a_version_with_a_line_reader_reads_free_fields_with_it(
    env: dict[str, str], redis_url: str, small_model: tuple[bytes, dict[str, object]], mnist_root: Path, tmp_path: Path
) -> None:
    weights, meta = small_model
    torch.manual_seed(0)  # an untrained line reader: which reader ran is the point, not what it read
    Registry(connect(redis_url), Keys()).publish(artifact.with_sequence(weights, build()), VersionInfo(**meta))  # type: ignore[arg-type]
    pool = DigitPool(*load_mnist(mnist_root, train=False))
    folder = tmp_path / "fields"
    folder.mkdir()
    for i in range(3):
        render_field(pool, (78, i), STYLES["free"]).pil().save(folder / f"free-{i}.png")
        render_field(pool, (79, i), STYLES["comb"]).pil().save(folder / f"comb-{i}.png")
    worker = WorkerProcess(env, "lines", tmp_path / "worker.log", {"compile": "false", "precision": "fp32"})
    try:
        run = producer(env, "submit", str(folder), "--field", "--json")
        assert run.returncode == 0, run.stderr
        job = json.loads(run.stdout.strip().splitlines()[-1])["job"]
        out = producer(env, "results", job, "--wait", "--timeout", "150", "--format", "jsonl")
        assert out.returncode == 0, out.stderr + worker.log()
    finally:
        worker.stop()
    rows = {Path(r["item"]).name: r for r in map(json.loads, out.stdout.splitlines())}
    assert len(rows) == 6 and all(r["error"] is None for r in rows.values()), rows
    for name, r in rows.items():
        # Comb cells are read by both readers: fused where they found as many characters, else the
        # more confident reading stands (which, an untrained line reader decides by chance).
        want = (
            {("free", "sequence")}
            if name.startswith("free")
            else {("comb", m) for m in ("segment", "both", "sequence")}
        )
        assert (r["layout"], r["method"]) in want, (name, r)

"""AOT packages in the compile cache: keyed by everything they depend on, loaded only when their
manifest and checksum match, refused with a warning (so the engine compiles) otherwise, and
built by one process at a time, and pruned when nobody has used them for days. The real build
and load is in tests/test_engine.py."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from torch import nn

from recognizer.aot import DIGITS, LINES, PackageKey, Packages
from recognizer.aotprune import prune

CPU = torch.device("cpu")
ARCH = {"name": "resnet18", "stem": "conv3x3", "in_channels": 1, "num_classes": 10}


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)).eval()


def digits_key(packages: Packages, bucket: int, precision: str = "float32") -> PackageKey:
    return packages.key(DIGITS, (bucket, 1, 28, 28), precision, CPU)


def fake_package(packages: Packages, key: PackageKey, content: bytes, sha256: str | None = None) -> Path:
    """Bytes and a manifest where a build would put them."""
    package, manifest = packages.paths(key)
    package.parent.mkdir(parents=True, exist_ok=True)
    package.write_bytes(content)
    digest = sha256 or hashlib.sha256(content).hexdigest()
    manifest.write_text(json.dumps({"key": asdict(key), "sha256": digest}))
    return package


def test_the_key_names_everything_a_package_depends_on(tmp_path: Path) -> None:
    packages = Packages(tmp_path, "a" * 64, ARCH)
    key = digits_key(packages, 8)
    assert key.weights_sha256 == "a" * 64 and key.dims == (8, 1, 28, 28) and key.dtype == "float32"
    assert key.torch == torch.__version__ and key.device.startswith("cpu-") and key.quantizer == ""
    int8 = digits_key(packages, 8, "int8")
    assert int8.quantizer, "an int8 package names the quantizer that made its graph"
    variants = [
        digits_key(Packages(tmp_path, "b" * 64, ARCH), 8),
        digits_key(Packages(tmp_path, "a" * 64, ARCH | {"stem": "imagenet"}), 8),
        digits_key(packages, 32),
        digits_key(packages, 8, "bfloat16"),
        int8,
        replace(int8, quantizer="0.0.1"),
        packages.key(LINES, (8, 1, 28, 28), "float32", CPU),  # another part, the same shape
        replace(key, device=key.device + "-other"),  # whatever this machine is, another kind
        replace(key, torch="2.0.0"),
        replace(key, machine="aarch64"),
        replace(key, format=key.format + 1),
    ]
    paths = {packages.paths(v)[0] for v in variants} | {packages.paths(key)[0]}
    assert len({v.digest for v in variants} | {key.digest}) == len(variants) + 1
    assert len(paths) == len(variants) + 1, "two keys share a file"
    assert digits_key(Packages(tmp_path, "a" * 64, dict(reversed(ARCH.items()))), 8) == key


def test_no_packages_means_compile_without_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    packages = Packages(tmp_path, "a" * 64, ARCH)
    assert packages.load([digits_key(packages, 1), digits_key(packages, 8)]) is None
    assert "AOT" not in caplog.text


@pytest.mark.parametrize("damage", ["checksum", "other key", "not a package"])
def test_a_damaged_or_foreign_package_is_refused_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    packages = Packages(tmp_path, "a" * 64, ARCH)
    key = digits_key(packages, 1)
    if damage == "checksum":
        fake_package(packages, key, b"PK\x03\x04 package bytes", sha256="0" * 64)
        reason = "checksum mismatch"
    elif damage == "other key":  # e.g. copied from a machine with another torch
        package, manifest = packages.paths(key)
        fake_package(packages, replace(key, torch="2.0.0"), b"bytes")
        packages.paths(replace(key, torch="2.0.0"))[1].rename(manifest)
        packages.paths(replace(key, torch="2.0.0"))[0].rename(package)
        reason = "another model, precision or platform"
    else:  # checksum and manifest agree, but the bytes are no package
        fake_package(packages, key, b"not a zip archive at all")
        reason = "unusable"
    assert packages.load([key]) is None
    assert "compiling instead" in caplog.text and reason in caplog.text
    assert not packages.usable(key)


def test_one_process_builds_a_version_at_a_time(tmp_path: Path) -> None:
    first, second = Packages(tmp_path, "a" * 64, ARCH), Packages(tmp_path, "a" * 64, ARCH)
    with first.lock() as mine:
        assert mine
        with second.lock() as theirs:
            assert not theirs  # another worker's builder skips the version
    with second.lock() as theirs:
        assert theirs  # released


def test_packages_need_the_weights_checksum(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        Packages(tmp_path, "", ARCH)


class FakeInductor:
    """Stands in for AOTInductor's compile and load: a 'package' that runs ``runner``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, runner: nn.Module) -> None:
        monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", self.compile)
        monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda path: runner)

    @staticmethod
    def compile(exported: object, package_path: str, inductor_configs: object) -> str:
        Path(package_path).write_bytes(b"PK package bytes")
        return package_path


def test_a_build_that_computes_otherwise_than_the_model_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, packages = tiny(), Packages(tmp_path, "a" * 64, ARCH)
    key = digits_key(packages, 2)
    FakeInductor(monkeypatch, nn.Sequential(model, _Shift(1.0)))
    with pytest.raises(ValueError, match="other outputs than the eager model"):
        packages.build(model, key)
    assert [p.name for p in packages.root.iterdir() if not p.name.startswith(".lock")] == []
    FakeInductor(monkeypatch, model)
    packages.build(model, key)
    assert packages.load([key]) is not None and packages.usable(key)


def test_a_package_that_no_longer_gives_its_recorded_output_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model, packages = tiny(), Packages(tmp_path, "a" * 64, ARCH)
    key = digits_key(packages, 2)
    FakeInductor(monkeypatch, model)
    packages.build(model, key)
    FakeInductor(monkeypatch, nn.Sequential(model, _Shift(0.5)))  # e.g. kernels misbehaving on this host
    assert packages.load([key]) is None
    assert "differs from the one recorded" in caplog.text and not packages.usable(key)


class _Shift(nn.Module):
    def __init__(self, by: float) -> None:
        super().__init__()
        self.by = by

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.by


DAY = 86400.0


def age(path: Path, days: float) -> None:
    stamp = path.stat().st_mtime - days * DAY
    os.utime(path, (stamp, stamp))


def test_pruning_deletes_what_nobody_loaded_and_keeps_what_was_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny()
    FakeInductor(monkeypatch, model)
    current, old = Packages(tmp_path, "a" * 64, ARCH), Packages(tmp_path, "b" * 64, ARCH)
    in_use, retired = digits_key(current, 2), digits_key(old, 2)
    stale_format = replace(digits_key(current, 8), format=1)  # an older format, never loaded again
    for packages, key in ((current, in_use), (old, retired), (current, stale_format)):
        packages.build(model, key)
        for path in packages.paths(key):
            age(path, 30)
    assert current.load([in_use]) is not None  # loading marks it used
    dead_build = current.root / ".digits-2-float32-x.123-abcd.tmp.pt2"
    dead_build.write_bytes(b"half a package")
    age(dead_build, 1)
    orphan = current.root / "digits-9-float32-orphan.pt2"  # bytes whose manifest went first
    orphan.write_bytes(b"PK")
    age(orphan, 30)

    pruned = prune(tmp_path, keep_s=14 * DAY)

    assert all(p.exists() for p in current.paths(in_use))
    assert not any(p.exists() for p in current.paths(stale_format))
    assert not dead_build.exists() and not orphan.exists()
    assert not old.root.exists(), "an emptied version directory is removed"
    assert pruned.files == 6 and pruned.directories == 1 and pruned.bytes > 0
    assert current.load([in_use]) is not None
    assert prune(tmp_path, keep_s=14 * DAY).files == 0


def test_pruning_leaves_young_packages_and_a_directory_a_builder_holds(tmp_path: Path) -> None:
    packages = Packages(tmp_path, "a" * 64, ARCH)
    young = fake_package(packages, digits_key(packages, 1), b"PK young")
    live_build = packages.root / ".digits-8-float32-x.1-abcd.tmp.pt2"
    live_build.write_bytes(b"being written")
    assert prune(tmp_path, keep_s=14 * DAY).files == 0 and young.exists() and live_build.exists()
    held = Packages(tmp_path, "c" * 64, ARCH)
    with held.lock() as mine:
        assert mine
        prune(tmp_path, keep_s=14 * DAY)
        assert held.root.exists(), "a builder about to write there keeps its directory"
    assert prune(tmp_path, keep_s=14 * DAY).directories == 1 and not held.root.exists()
    assert prune(tmp_path / "nothing-here", keep_s=DAY).files == 0

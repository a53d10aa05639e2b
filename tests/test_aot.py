"""AOT packages in the compile cache: keyed by everything they depend on, loaded only when their
manifest and checksum match, refused with a warning (so the engine compiles) otherwise, and
built by one process at a time. The real build and load is in tests/test_engine.py."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from torch import nn

from recognizer.aot import PackageKey, Packages

CPU = torch.device("cpu")
ARCH = {"name": "resnet18", "stem": "conv3x3", "in_channels": 1, "num_classes": 10}


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)).eval()


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
    key = packages.key(8, torch.float32, CPU)
    assert key.weights_sha256 == "a" * 64 and key.bucket == 8 and key.dtype == "float32"
    assert key.torch == torch.__version__ and key.device.startswith("cpu-")
    variants = [
        Packages(tmp_path, "b" * 64, ARCH).key(8, torch.float32, CPU),
        Packages(tmp_path, "a" * 64, ARCH | {"stem": "imagenet"}).key(8, torch.float32, CPU),
        packages.key(32, torch.float32, CPU),
        packages.key(8, torch.bfloat16, CPU),
        replace(key, device=key.device + "-other"),  # whatever this machine is, another kind
        replace(key, torch="2.0.0"),
        replace(key, machine="aarch64"),
        replace(key, format=key.format + 1),
    ]
    paths = {packages.paths(v)[0] for v in variants} | {packages.paths(key)[0]}
    assert len({v.digest for v in variants} | {key.digest}) == len(variants) + 1
    assert len(paths) == len(variants) + 1, "two keys share a file"
    assert Packages(tmp_path, "a" * 64, dict(reversed(ARCH.items()))).key(8, torch.float32, CPU) == key


def test_no_packages_means_compile_without_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert Packages(tmp_path, "a" * 64, ARCH).load(tiny(), (1, 8), torch.float32, CPU) is None
    assert "AOT" not in caplog.text


@pytest.mark.parametrize("damage", ["checksum", "other key", "not a package"])
def test_a_damaged_or_foreign_package_is_refused_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    packages = Packages(tmp_path, "a" * 64, ARCH)
    key = packages.key(1, torch.float32, CPU)
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
    assert packages.load(tiny(), (1,), torch.float32, CPU) is None
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

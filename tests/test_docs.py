"""The docs name the tests that prove each guarantee: every name must be a real test."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `test_x.py::test_name`, or `::test_name` for another test of the file named just before it.
REFERENCE = re.compile(r"`(test_\w+\.py)?::(test_\w+)`|`(test_\w+\.py)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def references(text: str) -> list[tuple[str, str | None]]:
    """(file, test name or None for a whole file) for every test a text names, in order."""
    out: list[tuple[str, str | None]] = []
    current = ""
    for match in REFERENCE.finditer(text):
        file, name, whole = match.groups()
        if whole:
            current = whole
            out.append((whole, None))
            continue
        current = file or current
        assert current, f"`::{name}` follows no file name"
        out.append((current, name))
    return out


def test_reference_parser_follows_the_file_named_before() -> None:
    text = "`test_a.py::test_one`, `::test_two` and `test_b.py`, `::test_three`"
    assert references(text) == [
        ("test_a.py", "test_one"),
        ("test_a.py", "test_two"),
        ("test_b.py", None),
        ("test_b.py", "test_three"),
    ]


def test_every_test_the_docs_name_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Guarantees") :]
    section = section[: section.index("\n## ", 1)]
    security = (ROOT / "SECURITY.md").read_text()
    named = references(section) + references(security)
    assert len(named) >= 40, "the Guarantees section should name the tests behind its promises"
    missing = []
    for file, name in named:
        path = ROOT / "tests" / file
        if not path.exists():
            missing.append(file)
        elif name is not None and name not in _tests_in(path):
            missing.append(f"{file}::{name}")
    assert missing == [], f"README/SECURITY.md name tests that do not exist: {missing}"

"""Field rules: what a field must look like (a length, a pattern, a check digit), and the most
probable reading that satisfies them.

A submission may carry a rule (``producer submit --field --length 5 --check luhn``). The reader
keeps each character's top three alternatives; ``apply`` searches their combinations in order of
probability and returns the first that fits. It never coerces silently: the outcome lists every
character it changed, with both readings and their probabilities, and a field that fits nothing
is left as read and marked for review with the reason. Torch-free: the producer validates rules.

    rule = FieldRule.parse({"length": [5, 5], "check": "luhn"})
    outcome = apply(rule, [[(9, 0.9), (4, 0.05)], ...])   # per character: (digit, probability)
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from config.errors import ConfigError

__all__ = ["CHECKS", "FieldRule", "RuleOutcome", "apply", "luhn_ok", "mod11_ok"]

MAX_LENGTH = 64  # the longest field a rule may ask for
MAX_PATTERN = 200  # characters of a pattern: it runs on the workers, keep it small
# Combinations tried before giving up: with three alternatives per character this covers every
# reading that differs from the best in up to two or three uncertain places.
MAX_TRIES = 2000


def luhn_ok(text: str) -> bool:
    """The Luhn check (payment cards, many IDs): the last digit checks the others."""
    total = 0
    for i, ch in enumerate(reversed(text)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return len(text) >= 2 and total % 10 == 0


def mod11_ok(text: str) -> bool:
    """Weighted mod 11 (as ISBN-10 and many account numbers): digit i from the right weighs i,
    the sum is a multiple of 11. Digits only: a check value of 10 (ISBN's X) cannot be written."""
    return len(text) >= 2 and sum(int(ch) * w for w, ch in enumerate(reversed(text), 1)) % 11 == 0


CHECKS = {"luhn": luhn_ok, "mod11": mod11_ok}


@dataclass(frozen=True)
class FieldRule:
    """``length``: the allowed number of characters (inclusive range); ``pattern``: a regular
    expression the whole text must match; ``check``: a check-digit scheme from ``CHECKS``."""

    length: tuple[int, int] | None = None
    pattern: str | None = None
    check: str | None = None
    _compiled: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.length is not None:
            lo, hi = self.length
            if not 1 <= lo <= hi <= MAX_LENGTH:
                raise ConfigError(f"field length {lo}-{hi} must be within 1-{MAX_LENGTH}, shortest first")
        if self.check is not None and self.check not in CHECKS:
            raise ConfigError(f"unknown check {self.check!r}: choose one of {', '.join(sorted(CHECKS))}")
        if self.pattern is not None:
            if len(self.pattern) > MAX_PATTERN:
                raise ConfigError(f"field pattern is {len(self.pattern)} characters, over {MAX_PATTERN}")
            try:
                object.__setattr__(self, "_compiled", re.compile(self.pattern))
            except re.error as exc:
                raise ConfigError(f"field pattern {self.pattern!r} is not a regular expression: {exc}") from exc

    @classmethod
    def parse(cls, spec: dict[str, Any] | None) -> FieldRule | None:
        """A rule from its JSON form (as stored with a job); None for no rule."""
        if not spec:
            return None
        unknown = set(spec) - {"length", "pattern", "check"}
        if unknown:
            raise ConfigError(f"unknown field rule keys {sorted(unknown)}: use length, pattern, check")
        length = spec.get("length")
        if length is not None:
            try:
                lo, hi = (int(length), int(length)) if isinstance(length, int) else (int(length[0]), int(length[1]))
            except (TypeError, ValueError, IndexError) as exc:
                raise ConfigError(f"field length must be N or [MIN, MAX], not {length!r}") from exc
            length = (lo, hi)
        return cls(length, spec.get("pattern"), spec.get("check"))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.length is not None:
            out["length"] = list(self.length)
        if self.pattern is not None:
            out["pattern"] = self.pattern
        if self.check is not None:
            out["check"] = self.check
        return out

    def broken_by(self, text: str) -> str | None:
        """Why ``text`` does not fit, or None when it does."""
        if self.length is not None and not self.length[0] <= len(text) <= self.length[1]:
            lo, hi = self.length
            return f"{len(text)} characters, the rule wants {lo if lo == hi else f'{lo}-{hi}'}"
        if self._compiled is not None and not self._compiled.fullmatch(text):
            return f"does not match the pattern {self.pattern!r}"
        if self.check is not None and not CHECKS[self.check](text):
            return f"fails the {self.check} check digit"
        return None


@dataclass(frozen=True)
class RuleOutcome:
    """``text`` is the reading the rule accepted (or the original when none fits); ``changed``
    lists (position, read, chosen, probability read, probability chosen) for every substitution."""

    ok: bool
    text: str
    changed: list[tuple[int, int, int, float, float]]
    reason: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "changed": [
                {"index": i, "read": a, "chosen": b, "read_confidence": round(pa, 6), "chosen_confidence": round(pb, 6)}
                for i, a, b, pa, pb in self.changed
            ],
            "reason": self.reason,
        }


def _ranked(alternatives: Sequence[Sequence[tuple[int, float]]]) -> Any:
    """Index vectors into each character's alternatives, most probable combination first."""
    logs = [[math.log(max(p, 1e-12)) for _, p in alts] for alts in alternatives]
    start = tuple(0 for _ in alternatives)
    heap = [(-sum(row[0] for row in logs), start)]
    seen = {start}
    while heap:
        cost, pick = heapq.heappop(heap)
        yield pick
        for pos, k in enumerate(pick):
            if k + 1 < len(logs[pos]):
                nxt = (*pick[:pos], k + 1, *pick[pos + 1 :])
                if nxt not in seen:
                    seen.add(nxt)
                    heapq.heappush(heap, (cost + logs[pos][k] - logs[pos][k + 1], nxt))


def apply(rule: FieldRule, alternatives: Sequence[Sequence[tuple[int, float]]]) -> RuleOutcome:
    """The most probable reading that fits ``rule``, from each character's alternatives (best
    first). The length is the segmentation's: alternatives change characters, never their number."""
    read = "".join(str(alts[0][0]) for alts in alternatives)
    reason = rule.broken_by(read)
    if reason is None:
        return RuleOutcome(True, read, [], None)
    if rule.length is not None and not rule.length[0] <= len(read) <= rule.length[1]:
        return RuleOutcome(False, read, [], reason)
    for tries, pick in enumerate(_ranked(alternatives)):
        if tries >= MAX_TRIES:
            break
        text = "".join(str(alternatives[pos][k][0]) for pos, k in enumerate(pick))
        if rule.broken_by(text) is None:
            changed = []
            for pos, k in enumerate(pick):
                if k:
                    (read_digit, read_p), (chosen, chosen_p) = alternatives[pos][0], alternatives[pos][k]
                    changed.append((pos, read_digit, chosen, read_p, chosen_p))
            return RuleOutcome(True, text, changed, None)
    return RuleOutcome(False, read, [], f"{reason}, and no reading among the top alternatives fits")

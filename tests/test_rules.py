"""Field rules: parsing, the check digits, and the search for the most probable reading that fits."""

from __future__ import annotations

import pytest

from config.errors import ConfigError
from recognizer.rules import FieldRule, apply, luhn_ok, mod11_ok


def alts(*rows: list[tuple[int, float]]) -> list[list[tuple[int, float]]]:
    return list(rows)


def test_luhn_and_mod11_accept_known_numbers_and_refuse_a_changed_digit() -> None:
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert luhn_ok("4539148803436467")
    assert mod11_ok("0306406152")  # ISBN-10 0-306-40615-2
    assert not mod11_ok("0306406153")
    assert not luhn_ok("0") and not mod11_ok("0")  # one digit checks nothing


def test_parse_accepts_the_stored_forms_and_refuses_what_a_worker_could_not_follow() -> None:
    assert FieldRule.parse(None) is None and FieldRule.parse({}) is None
    rule = FieldRule.parse({"length": 5, "pattern": "9[0-9]{4}", "check": "luhn"})
    assert rule is not None and rule.length == (5, 5)
    assert FieldRule.parse(rule.as_dict()) == rule
    for bad in (
        {"length": [8, 3]},
        {"length": "five"},
        {"length": [0, 3]},
        {"check": "crc32"},
        {"pattern": "(["},
        {"pattern": "1" * 500},
        {"colour": "red"},
    ):
        with pytest.raises(ConfigError):
            FieldRule.parse(bad)


def test_a_reading_that_fits_is_left_alone() -> None:
    out = apply(FieldRule(length=(2, 3)), alts([(4, 0.9), (9, 0.1)], [(2, 0.8), (7, 0.2)]))
    assert out.ok and out.text == "42" and out.changed == []


def test_the_most_probable_fitting_reading_is_chosen_and_every_change_reported() -> None:
    # Read 79927398710: the Luhn check fails; the last digit's second choice (3) makes it pass.
    read = "79927398710"
    rows = [[(int(d), 0.99), ((int(d) + 1) % 10, 0.01)] for d in read[:-1]] + [[(0, 0.55), (3, 0.45)]]
    out = apply(FieldRule(check="luhn"), rows)
    assert out.ok and out.text == "79927398713"
    assert out.changed == [(10, 0, 3, 0.55, 0.45)]
    assert out.as_dict()["changed"][0] == {
        "index": 10,
        "read": 0,
        "chosen": 3,
        "read_confidence": 0.55,
        "chosen_confidence": 0.45,
    }


def test_a_pattern_picks_among_alternatives_in_probability_order() -> None:
    rows = alts([(1, 0.6), (7, 0.4)], [(0, 0.7), (6, 0.3)])
    assert apply(FieldRule(pattern="7[06]"), rows).text == "70"
    assert apply(FieldRule(pattern="[0-9]6"), rows).text == "16"


def test_nothing_fits_leaves_the_reading_and_says_why() -> None:
    out = apply(FieldRule(pattern="5.*"), alts([(1, 0.9), (7, 0.1)], [(2, 1.0)]))
    assert not out.ok and out.text == "12" and out.changed == []
    assert out.reason is not None and "pattern" in out.reason and "no reading" in out.reason


def test_a_wrong_length_is_never_coerced() -> None:
    out = apply(FieldRule(length=(5, 5)), alts([(1, 0.9)], [(2, 0.9)], [(3, 0.9)]))
    assert not out.ok and out.text == "123"
    assert out.reason == "3 characters, the rule wants 5"


def test_the_search_is_bounded_on_a_long_field_that_fits_nothing() -> None:
    rows = [[(d % 10, 0.4), ((d + 1) % 10, 0.3), ((d + 2) % 10, 0.3)] for d in range(40)]
    out = apply(FieldRule(pattern="x"), rows)  # digits never match: every try fails, quickly
    assert not out.ok

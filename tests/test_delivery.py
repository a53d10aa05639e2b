"""The retry and dead-letter policy, and message parsing (no Redis, no Celery)."""

from __future__ import annotations

from typing import Any

import pytest

from config.errors import MessageError
from worker.delivery import Action, after_failure, at_start, backoff, parse, salvage

GOOD = ["job1", [[0, "d0", "a.png"], [1, "d1", "b.png"]], 12.5]


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, 1.0, 10.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff(10_000, 0.5, 60.0) == 60.0  # no overflow on absurd counts


def test_a_failing_message_is_retried_then_dead_lettered() -> None:
    decisions = [after_failure(n, 4, 0.5, 60.0) for n in range(1, 5)]
    assert [d.action for d in decisions] == [Action.RETRY, Action.RETRY, Action.RETRY, Action.DEAD_LETTER]
    assert [d.countdown_s for d in decisions[:3]] == [0.5, 1.0, 2.0]


def test_a_stalled_worker_releases_without_delay_but_still_within_the_bound() -> None:
    assert after_failure(1, 3, 1.0, 60.0, worker_at_fault=True).action is Action.RELEASE
    assert after_failure(3, 3, 1.0, 60.0, worker_at_fault=True).action is Action.DEAD_LETTER


def test_a_delivery_beyond_the_limit_is_dead_lettered_before_any_work() -> None:
    # The previous delivery killed its worker: nothing recorded its failure, only the count.
    assert at_start(3, 3).action is Action.PROCESS
    assert at_start(4, 3).action is Action.DEAD_LETTER


def test_parse_accepts_the_producers_messages() -> None:
    message = parse(tuple(GOOD), {})
    assert (message.job, message.items, message.sent_at) == ("job1", [(0, "d0", "a.png"), (1, "d1", "b.png")], 12.5)
    assert parse(("job1",), {"items": [], "sent_at": None}).items == []


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "names no job"),
        ((42, []), {}, "names no job"),
        (("job1", "items"), {}, "not a list"),
        (("job1", [[0, "d0"]]), {}, "malformed item"),
        (("job1", [[0, "d0", "p", "extra"]]), {}, "malformed item"),
        (("job1", [["0", "d0", "p"]]), {}, "malformed item"),
        (("job1", [[-1, "d0", "p"]]), {}, "malformed item"),
        (("job1", [[True, "d0", "p"]]), {}, "malformed item"),
        (("job1", [[0, None, "p"]]), {}, "malformed item"),
        (("job1", [], "yesterday"), {}, "sent_at"),
        (("job1", [], 1.0, "extra"), {}, "unexpected"),
        (("job1", []), {"colour": "red"}, "unexpected"),
    ],
)
def test_parse_names_what_is_wrong(args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(MessageError, match=message):
        parse(args, kwargs)


def test_salvage_keeps_every_item_that_has_an_index() -> None:
    job, raw, usable = salvage(("job1", [[0, "d0", "a.png"], [1, "d1"], ["x", "d2", "c"], "junk", [2]]), {})
    assert job == "job1"
    assert len(raw) == 5
    assert usable == [(0, "d0", "a.png"), (1, "d1", ""), (2, "", "")]
    assert salvage((None, "nonsense"), {}) == (None, [], [])
    assert salvage((), {"job": "j", "items": [[3, "d", "p"]]})[2] == [(3, "d", "p")]

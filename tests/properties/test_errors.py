"""``errors.collect``: the core's one way to gather Results, checked against ``returns``'
own ``Fold.collect`` (the oracle; the project's loop exists because that one is
quadratic in the list's length)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from returns.iterables import Fold
from returns.result import Failure, Result, Success

from masq.core.errors import collect

RESULTS = st.lists(
    st.one_of(st.integers().map(Success), st.text(max_size=3).map(Failure)), max_size=30
)


@given(RESULTS)
def test_collect_answers_as_fold_collect(results: list[Result[int, str]]) -> None:
    empty: Result[tuple[int, ...], str] = Success(())
    assert collect(results) == Fold.collect(results, empty)


@given(RESULTS)
def test_collect_is_the_first_failure_or_every_value_in_order(
    results: list[Result[int, str]],
) -> None:
    failures = [r for r in results if isinstance(r, Failure)]
    expected = failures[0] if failures else Success(tuple(r.unwrap() for r in results))
    assert collect(results) == expected


def test_collect_stops_at_the_first_failure() -> None:
    seen: list[int] = []

    def results() -> object:
        for i in range(5):
            seen.append(i)
            yield Failure("bad") if i == 1 else Success(i)

    assert collect(results()) == Failure("bad")  # type: ignore[arg-type]
    assert seen == [0, 1]

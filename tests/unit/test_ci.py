"""One meaning of "in CI" for every test that may skip: CI=1/true/yes, any case."""

from __future__ import annotations

import pytest
from ci import cannot_run, in_ci


@pytest.mark.parametrize(
    ("value", "set_"),
    [("true", True), ("1", True), ("yes", True), ("TRUE", True), ("", False), ("0", False)],
)
def test_ci_is_set_by_1_true_or_yes(
    monkeypatch: pytest.MonkeyPatch, value: str, set_: bool
) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is set_


def test_a_test_that_cannot_run_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="no kernel"):
        cannot_run("no kernel")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no kernel"):
        cannot_run("no kernel")

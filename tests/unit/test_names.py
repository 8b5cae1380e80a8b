"""Which ``--masq-chain`` names are accepted: ones iptables takes and our parser reads back."""

from __future__ import annotations

import pytest

from masq.core.names import valid_chain_name


@pytest.mark.parametrize("name", ["IP-MASQ-AGENT", "x" * 28, "MY_CHAIN.1", "x"])
def test_valid_chain_names(name: str) -> None:
    assert valid_chain_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",  # empty
        "x" * 29,  # longer than iptables' 28 characters
        "-X",  # would read as an option
        "!X",  # would read as a negation
        "A B",  # a space splits the word
        "TAB\tCHAIN",
        "RETURN",  # targets and built-in chains
        "MASQUERADE",
        "ACCEPT",
        "POSTROUTING",
        'a"b',  # quotes and backslashes would need escaping in rule text
        "a'b",
        "a\\b",
    ],
)
def test_invalid_chain_names(name: str) -> None:
    assert not valid_chain_name(name)

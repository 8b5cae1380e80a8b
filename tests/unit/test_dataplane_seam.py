"""The agent drives one ``Dataplane`` protocol and never learns which dataplane is behind it.

The modules that drive it (agent, daemon, commands, options) import no codec and no
runner: everything dataplane-specific is reached through ``masq.shell.dataplane``.  Both
dataplanes implement the protocol themselves (mypy checks the assignments below), with the
same public methods.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from fake_iptables import FakeIptables, FakeKernel

from masq.core.options import DataplaneOptions
from masq.shell.dataplane import Dataplane
from masq.shell.iptables_runner import IptablesDataplane, IptablesPlan
from masq.shell.nftables_runner import NftablesDataplane, NftPlan

SHELL = Path(__file__).resolve().parents[2] / "masq" / "shell"
DRIVERS = ("agent", "daemon", "commands", "options")
DATAPLANE_SPECIFIC = (
    "masq.core.iptables",
    "masq.core.nftables",
    "masq.nftables",
    "masq.shell.iptables_runner",
    "masq.shell.nftables_runner",
    "masq.shell.iptables_backend",
)


def imported(source: str) -> set[str]:
    """Every module ``source`` imports, anywhere (functions and TYPE_CHECKING blocks too);
    ``from a import b`` counts as both ``a`` and ``a.b`` (b may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def dataplane_specific(source: str) -> list[str]:
    return sorted(
        name
        for name in imported(source)
        if any(name == m or name.startswith(m + ".") for m in DATAPLANE_SPECIFIC)
    )


@pytest.mark.parametrize("module", DRIVERS)
def test_drivers_import_no_codec_and_no_runner(module: str) -> None:
    assert dataplane_specific((SHELL / f"{module}.py").read_text()) == []


@pytest.mark.parametrize(
    "source",
    [
        "from masq.core.iptables.codec import render_restore",
        "import masq.core.nftables.model",
        "from masq.core import iptables",
        "def f():\n    from masq.shell import nftables_runner\n",
        "if TYPE_CHECKING:\n    from masq.shell.iptables_runner import Iptables\n",
    ],
)
def test_the_check_finds_every_way_of_importing_a_codec(source: str) -> None:
    assert dataplane_specific(source) != []


def test_both_dataplanes_implement_the_protocol_with_the_same_methods() -> None:
    iptables: Dataplane[IptablesPlan] = IptablesDataplane(
        DataplaneOptions(), backend=lambda: "nft", runner=FakeIptables(), kernel=FakeKernel()
    )
    nftables: Dataplane[NftPlan] = NftablesDataplane(
        DataplaneOptions(), FakeIptables(), FakeKernel()
    )
    protocol = {n for n in vars(Dataplane) if not n.startswith("_")}
    for plane in (iptables, nftables):
        public = {n for n in dir(type(plane)) if not n.startswith("_")}
        assert protocol <= public
        for name in protocol:
            assert callable(getattr(plane, name))


CORE = SHELL.parent / "core"
DECISION_LAYER = ("decision", "explain", "traffic", "options")


@pytest.mark.parametrize("module", DECISION_LAYER)
def test_the_decision_layer_imports_neither_dataplane(module: str) -> None:
    assert dataplane_specific((CORE / f"{module}.py").read_text()) == []


CONFIG_KEYS = (
    "nonMasqueradeCIDRs",
    "masqueradeCIDRs",
    "masqLinkLocal",
    "masqLinkLocalIPv6",
    "resyncInterval",
    "cidrLimit",
)


def spelled_keys(source: str) -> list[str]:
    """Config key names written in a string (or a piece of an f-string) rather than with
    fragment.py's constants; docstrings and ``Literal[...]`` types aside."""
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            skip.add(id(node.value))  # a docstring, of a module, class, function or name
        if isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "Literal":
            skip.update(id(n) for n in ast.walk(node.slice))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and id(node) not in skip
        and isinstance(node.value, str)
        and any(word.strip(":,.()[]") in CONFIG_KEYS for word in node.value.split())
    ]


@pytest.mark.parametrize(
    "path",
    [CORE / "decision.py", CORE / "explain.py", SHELL / "commands.py", SHELL / "agent.py"],
    ids=lambda p: p.name,
)
def test_config_keys_are_spelled_by_fragments_constants(path: Path) -> None:
    assert spelled_keys(path.read_text()) == []


def test_the_key_check_finds_a_spelled_key() -> None:
    assert spelled_keys('x = {"masqLinkLocal": 1}\ny = f"set in cidrLimit {x}"\n') == [
        "masqLinkLocal",
        "set in cidrLimit ",
    ]

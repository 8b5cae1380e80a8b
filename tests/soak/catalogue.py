"""What the soak sends packets to and what it writes into the config dir.

Destinations are /32s routed pod -> node -> dest; the CIDR pools are chosen so that
random configs flip every destination between masquerade and keep over a run.  The bad
inputs are the suite's own catalogues (the integration tests' classes and the unit tests'
one-example-per-message table), so a class added there is tortured here too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from integration.test_bad_input import BAD
from integration.topology import DEST_DOC_A, DEST_DOC_B, DEST_LINK_LOCAL, DEST_PRIVATE, DEST_UPLINK

Content = str | bytes
Files = tuple[tuple[str, Content], ...]
"""A ConfigMap's data: (key, content) pairs, sorted by key."""

DEST_CGNAT = "100.64.0.10"  # shared address space: reserved, but not RFC 1918
DEST_TEN = "10.77.0.10"  # RFC 1918 10/8
DEST_EXCEPTION = "10.78.1.10"  # RFC 1918, inside the masqueradeCIDRs candidates below

DESTINATIONS: tuple[str, ...] = (
    DEST_DOC_A,  # 203.0.113.10, TEST-NET-3: masqueraded by default
    DEST_DOC_B,  # 198.51.100.10, TEST-NET-2: masqueraded by default
    DEST_CGNAT,
    DEST_PRIVATE,  # 172.20.0.10, RFC 1918: kept by default
    DEST_TEN,
    DEST_UPLINK,  # 192.168.100.2, on the node's own uplink subnet
    DEST_LINK_LOCAL,  # 169.254.10.10: kept unless masqLinkLocal (or an exception)
    DEST_EXCEPTION,
)
EXTRA_DESTINATIONS = (DEST_CGNAT, DEST_TEN, DEST_EXCEPTION)
"""The ones the shared topology does not have: added on dest's lo, routed via dest."""

NON_MASQUERADE_POOL = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "10.77.0.0/16",
    "10.78.0.0/16",
    "172.20.0.0/16",
    "192.168.100.0/24",
    "203.0.113.0/24",
    "198.51.100.0/24",
    "100.64.0.0/10",
)
MASQUERADE_POOL = (
    "10.78.0.0/16",
    "10.78.1.0/24",
    "172.20.0.0/16",
    "192.168.100.2/32",
    "169.254.10.0/24",  # an exception beats the link-local rule
)

MAIN_FILE = "ip-masq-agent"
OPTIONAL_FILES = ("ip-masq-cloud", "ip-masq-extra")
BROKEN_FILE = "ip-masq-broken"

MERGED_LIMIT = "merged-cidr-limit"
"""A class only a merge reveals: one file lowers cidrLimit below what the others list."""


def _unit_cases() -> dict[str, Content]:
    """The unit tests' table of bad inputs (one per error message), by case name.

    ``tests/unit`` is not a package (pytest puts it on ``sys.path`` itself), so the module
    is loaded from its path rather than copied.
    """
    path = Path(__file__).resolve().parents[1] / "unit" / "test_fragment_cases.py"
    spec = importlib.util.spec_from_file_location("soak_fragment_cases", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cases: object = module.CASES
    if not isinstance(cases, list):
        raise TypeError(f"{path}: CASES is not a list")
    out: dict[str, Content] = {}
    for name, text, _message in cases:
        if not isinstance(name, str) or not isinstance(text, str | bytes):
            raise TypeError(f"{path}: unexpected case {name!r}")
        out[name] = text
    return out


def bad_inputs() -> dict[str, Content]:
    """Every bad-input class the suite knows, as file contents, by class name."""
    out: dict[str, Content] = {f"integration:{k}": v for k, v in BAD.items()}
    out.update({f"unit:{k}": v for k, v in _unit_cases().items()})
    out[MERGED_LIMIT] = "cidrLimit: 1\n"
    return dict(sorted(out.items()))

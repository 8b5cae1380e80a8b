"""The public API is one list (``masq._api``): ``__all__``, what imports and what type-checks
all follow from it, so none of them can drift from the others."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import masq
from masq import _api

PUBLIC: list[str] = masq.__all__  # type: ignore[attr-defined]  # derived at run time

STAR = """
import masq
namespace: dict[str, object] = {}
exec("from masq import *", namespace)
print(" ".join(sorted(n for n in namespace if n != "__builtins__")))
print(" ".join(masq.__all__))
"""


def test_all_is_the_api_list_and_version() -> None:
    """``__all__`` names exactly the public names ``masq._api`` imports plus ``__version__``,
    sorted, and ``dir(masq)`` shows the same."""
    listed = {name for name in vars(_api) if not name.startswith("_")}
    assert len(listed) > 40  # fails if the derivation reads the wrong namespace
    assert sorted([*listed, "__version__"]) == PUBLIC
    assert dir(masq) == PUBLIC


def test_all_is_exactly_what_imports() -> None:
    """In a fresh interpreter, ``from masq import *`` binds exactly ``__all__``, each name bound
    to the object its home module defines; a name outside ``__all__`` does not import."""
    done = subprocess.run(
        [sys.executable, "-c", STAR], capture_output=True, text=True, check=True, timeout=60
    )
    star, listed = done.stdout.splitlines()
    assert star.split() == listed.split() == PUBLIC
    for name in PUBLIC:
        assert getattr(masq, name) is getattr(_api, name, masq.__version__), name
    with pytest.raises(ImportError):
        exec("from masq import parse_duration_ns", {})  # public in its module, not in the API


USER = """
import masq
from masq import merge
from masq import *

reveal_type(merge)
reveal_type(should_masquerade)
masq.no_such_name
"""


def test_the_api_type_checks_for_users(tmp_path: Path) -> None:
    """A user's ``mypy --strict`` sees every public name with its real type (not Any), through
    ``from masq import X``, the star import and ``masq.X``, and refuses a name the API lacks."""
    user = tmp_path / "user.py"
    user.write_text(USER)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(user),
        ],
        capture_output=True,
        text=True,
        check=False,  # the expected error exits 1
        timeout=300,
    )
    lines = done.stdout.splitlines()
    revealed = [line.split("Revealed type is ", 1)[1] for line in lines if ": note: " in line]
    assert len(revealed) == 2, done.stdout
    assert revealed[0].startswith('"def (fragments: typing.Iterable[masq.core.fragment.Fragment]')
    assert revealed[0].endswith('Result[masq.core.merge.Merged, masq.core.errors.ConfigError]"')
    assert revealed[1].startswith('"def (config: masq.core.config.MasqConfig')
    assert [line for line in lines if ": error: " in line] == [
        f'{user}:8: error: Module has no attribute "no_such_name"  [attr-defined]'
    ]

"""The library documentation is true: its examples run as written and it names the whole API."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

import masq

ROOT = Path(__file__).resolve().parents[2]
PUBLIC: list[str] = masq.__all__  # type: ignore[attr-defined]  # derived at run time
BLOCK = re.compile(
    r"```python\n(?P<code>.*?)```(?:\s*\nOutput:\s*\n```\n(?P<output>.*?)```)?", re.S
)


def examples(path: Path) -> list[tuple[str, str | None]]:
    return [(m["code"], m["output"]) for m in BLOCK.finditer(path.read_text(encoding="utf-8"))]


DOCUMENTED = [
    (doc, i, code, output)
    for doc in ("README.md", "docs/library.md")
    for i, (code, output) in enumerate(examples(ROOT / doc))
]


def test_the_docs_hold_examples() -> None:
    # Fails if the block pattern stops matching (then the test below would test nothing).
    assert {doc for doc, *_ in DOCUMENTED} == {"README.md", "docs/library.md"}
    assert sum(1 for *_, output in DOCUMENTED if output is not None) >= 2


@pytest.mark.parametrize(
    ("doc", "index", "code", "output"), DOCUMENTED, ids=[f"{d}#{i}" for d, i, _, _ in DOCUMENTED]
)
def test_example_runs_as_written(doc: str, index: int, code: str, output: str | None) -> None:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"{doc} example {index}", "exec"), {"__name__": "__doc_example__"})
    if output is not None:
        assert printed.getvalue() == output


def test_every_public_name_is_documented() -> None:
    text = (ROOT / "docs" / "library.md").read_text(encoding="utf-8")
    missing = [n for n in PUBLIC if n != "__version__" and f"`{n}`" not in text]
    assert missing == []


def test_every_documented_name_exists() -> None:
    # Fails if the docs keep a name the package no longer exports.
    from masq import nftables

    text = (ROOT / "docs" / "library.md").read_text(encoding="utf-8")
    table_names = re.findall(r"^\| `([A-Za-z_]+)`", text, re.M)
    assert table_names, "no API table found"
    exported = {*PUBLIC, *nftables.__all__}
    assert [n for n in table_names if n not in exported] == []


def test_every_nftables_name_is_documented() -> None:
    from masq import nftables

    text = (ROOT / "docs" / "library.md").read_text(encoding="utf-8")
    section = text[text.index("## The nftables dataplane") :]
    assert [n for n in nftables.__all__ if f"`{n}`" not in section] == []


def test_the_api_loads_lazily_and_completely() -> None:
    """Every public name resolves (PEP 562 lazy loading), unknown ones raise AttributeError,
    and importing the package alone loads none of the dataplanes."""
    import subprocess
    import sys

    for name in PUBLIC:
        assert getattr(masq, name) is not None, name
    with pytest.raises(AttributeError):
        _ = masq.no_such_name  # type: ignore[attr-defined]  # mypy refuses it too
    probe = "import sys, masq; print(sorted(m for m in sys.modules if m.startswith('masq.')))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert loaded.strip() == "[]"

"""The core is pure: no shell imports, no I/O modules, no open()/print()/input() calls."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "masq" / "core"
FORBIDDEN_MODULES = {
    "os",
    "sys",
    "subprocess",
    "socket",
    "sh",
    "pathlib",
    "io",
    "time",
    "datetime",
    "random",
    "secrets",
    "threading",
    "multiprocessing",
    "asyncio",
    "logging",
    "shutil",
    "tempfile",
    "signal",
    "select",
    "urllib",
    "http",
    "requests",
    "inotify_simple",
    "prometheus_client",
    "builtins",
    "importlib",
    "ctypes",
}
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval", "__import__", "breakpoint"}
MODULES = sorted(CORE.rglob("*.py"))


def imported(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = {0: "", 1: "masq.core", 2: "masq"}.get(node.level, "")  # core-level modules
            names.append(".".join(p for p in (base, node.module or "") if p))
    return names


def test_every_core_module_is_checked() -> None:
    # Fails if the glob stops descending into a dataplane subpackage (masq/core/iptables/...),
    # which would let a module there do I/O unchecked.
    names = {p.relative_to(CORE).as_posix() for p in MODULES}
    packages = {p.parent.relative_to(CORE).as_posix() for p in CORE.rglob("__init__.py")}
    assert {"decision.py", "fragment.py", "merge.py", "iptables/codec.py"} <= names
    assert all(any(n.startswith(f"{pkg}/") or pkg == "." for n in names) for pkg in packages)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(CORE).as_posix())
def test_core_imports_no_shell_and_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for name in imported(tree):
        assert not name.startswith("masq.shell"), f"{path.name} imports {name}"
        assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name} imports {name}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(CORE).as_posix())
def test_core_calls_no_io_builtins(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in FORBIDDEN_CALLS, (
                f"{path.name}:{node.lineno} calls {node.func.id}"
            )


def test_detector_catches_violations() -> None:
    # The checks above must be able to fail: a module doing I/O is caught.
    bad = ast.parse("import os\nfrom ..shell import logs\nprint(open('x').read())\n")
    names = imported(bad)
    assert "os" in names
    assert "masq.shell" in names  # the relative import, resolved
    calls = {
        n.func.id for n in ast.walk(bad) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert {"print", "open"} <= calls

"""Running iptables: observe what the agent owns, apply one restore per family.

Every command is an argv list run through ``sh`` (never a shell string).  What
is read is chosen to read least on a node whose nat table is huge (kube-proxy):
``-S POSTROUTING`` plus ``-S CHAIN -v`` on both backends.  On nft a one-chain
listing costs ~5 ms whatever the table size.  On legacy every listing fetches
the whole table blob from the kernel (``-S`` ~80 ms with 50k rules, ``-save``
~110 ms), so one save looks cheaper than two listings, but measured here it is
not: the save's 5 MB of text costs this process ~125 ms of CPU to capture and
another ~170 ms to parse, while a listing's output is a few lines.
"""

from __future__ import annotations

import re
from typing import Literal

from returns.result import Failure

from masq.core.addresses import Family
from masq.core.iptables.codec import parse_save
from masq.core.iptables.model import Ruleset
from masq.core.names import POSTROUTING
from masq.shell.errors import AgentError, TransientError
from masq.shell.process import Completed, Runner, run_command

ResolvedBackend = Literal["nft", "legacy"]
LOCK_WAIT_SECONDS = 5  # then exit 4 -> TransientError -> backoff, never a silent hang
RANDOM_FULLY_MIN_VERSION = (1, 6, 2)
_TRANSIENT_EXIT = 4  # iptables' RESOURCE_PROBLEM: lock held, ENOBUFS, EAGAIN
_TRANSIENT_TEXT = (
    "xtables lock",
    "Another app is currently holding",
    "Resource temporarily unavailable",
)
# iptables-nft 1.8.9 says "incompatible" for a chain that simply does not exist.
_ABSENT_TEXT = ("No chain/target/match by that name", "does not exist", "is incompatible")
_VERSION = re.compile(r"v(\d+)\.(\d+)(?:\.(\d+))?")


_PERMANENT_TEXT = ("Permission denied", "Operation not permitted")


def is_transient(result: Completed) -> bool:
    """Worth retrying: a held lock or a busy kernel, never a missing capability."""
    if any(t in result.stderr for t in _PERMANENT_TEXT):
        return False  # iptables-nft says exit 4 for this too; retrying cannot help
    return result.exit_code == _TRANSIENT_EXIT or any(t in result.stderr for t in _TRANSIENT_TEXT)


def failure(result: Completed, what: str) -> AgentError:
    """The right exception for a failed command, with its first stderr line as the reason."""
    lines = [ln.strip() for ln in result.stderr.splitlines() if ln.strip()]
    reason = lines[0] if lines else f"exit code {result.exit_code}"
    message = f"{what} failed ({result.argv[0]}): {reason}"
    return TransientError(message) if is_transient(result) else AgentError(message)


def parse_version(text: str) -> tuple[int, int, int] | None:
    m = _VERSION.search(text)
    if m is None:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


_random_fully_cache: dict[str, bool] = {}


class Iptables:
    """One family's iptables on one backend."""

    def __init__(
        self, backend: ResolvedBackend, family: Family, runner: Runner = run_command
    ) -> None:
        self.backend = backend
        self.family = family
        base = "iptables" if family == "ipv4" else "ip6tables"
        self.binary = f"{base}-{backend}"
        self.restore_binary = f"{base}-{backend}-restore"
        self._run = runner

    def observe_text(self, chain: str) -> str:
        """POSTROUTING's rules and our chain with counters, as two one-chain listings."""
        wait = f"--wait={LOCK_WAIT_SECONDS}"  # legacy listings take the xtables lock too
        post = self._run([self.binary, wait, "-t", "nat", "-S", POSTROUTING], None)
        if post.exit_code != 0:
            raise failure(post, "listing POSTROUTING")
        own = self._run([self.binary, wait, "-t", "nat", "-S", chain, "-v"], None)
        if own.exit_code == 1 and any(t in own.stderr for t in _ABSENT_TEXT):
            return post.stdout  # our chain does not exist (yet)
        if own.exit_code != 0:
            raise failure(own, f"listing {chain}")
        return post.stdout + own.stdout

    def observe(self, chain: str) -> Ruleset:
        text = self.observe_text(chain)
        parsed = parse_save(text, chain, self.family)
        if isinstance(parsed, Failure):
            error = parsed.failure().at(f"{self.binary} -S output")
            raise AgentError(f"cannot parse {error}")
        return parsed.unwrap()

    def restore(self, script: str) -> None:
        """One all-or-nothing ``--noflush`` transaction on the nat table."""
        res = self._run([self.restore_binary, "--noflush", f"--wait={LOCK_WAIT_SECONDS}"], script)
        if res.exit_code != 0:
            raise failure(res, f"{self.family} iptables-restore")

    def supports_random_fully(self, observed_final_random_fully: bool) -> bool:
        """Trust what the kernel already holds; otherwise ask ``--version`` once per process."""
        if observed_final_random_fully:
            return True
        cached = _random_fully_cache.get(self.binary)
        if cached is not None:
            return cached
        res = self._run([self.binary, "--version"], None)
        version = parse_version(res.stdout + res.stderr) if res.exit_code == 0 else None
        supported = version is not None and version >= RANDOM_FULLY_MIN_VERSION
        _random_fully_cache[self.binary] = supported
        return supported

"""A scripted stand-in for the iptables binaries: answers listings, records every call.

Its listings are rendered with the project's own ``render_rule``, so the shell's unit tests
that use it see whatever the codec writes and cannot catch a rendering bug: there, a wrong
spelling would read back just as it was written.  Rendering is pinned to what the real
tools print elsewhere: ``tests/unit/test_upstream_rules.py`` writes rules with
``iptables-restore`` and compares ``iptables-save`` output byte for byte with
``render_rule`` (both families, nft and legacy, comments that need quoting and escaping),
in a throwaway network namespace, and fails rather than skips under ``CI=true``; the
integration tests compare the agent's rules in the kernel with text written out
independently (``tests/integration/expected.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from masq.core.iptables.codec import render_rule
from masq.core.iptables.model import Ruleset
from masq.core.names import POSTROUTING
from masq.shell.process import Completed, Stdin

Handler = Callable[[list[str], Stdin], Completed | None]


def listing(ruleset: Ruleset, chain: str) -> tuple[str, str | None]:
    """What ``-S POSTROUTING`` and ``-S CHAIN -v`` print for ``ruleset`` (None: chain absent)."""
    post = ruleset.chain(POSTROUTING)
    post_text = "-P POSTROUTING ACCEPT\n" + "".join(
        render_rule(POSTROUTING, r) + "\n" for r in (post.rules if post else ())
    )
    own = ruleset.chain(chain)
    if own is None:
        return post_text, None
    return post_text, f"-N {chain}\n" + "".join(render_rule(chain, r) + "\n" for r in own.rules)


@dataclass
class FakeIptables:
    post: str = "-P POSTROUTING ACCEPT\n"
    chain: str | None = None  # -S CHAIN output; None: the chain does not exist
    version: str = "iptables v1.8.9 (nf_tables)\n"
    restore_results: list[tuple[int, str]] = field(default_factory=list)  # popped per restore
    calls: list[list[str]] = field(default_factory=list)
    stdin: list[str] = field(default_factory=list)
    on_restore: Callable[[str], None] | None = None

    def __call__(
        self, argv: list[str], stdin: Stdin = None, timeout: float | None = None
    ) -> Completed:
        self.calls.append(argv)
        name = argv[0]
        if name.endswith("-restore"):
            script = stdin if isinstance(stdin, str) else ""
            self.stdin.append(script)
            code, err = self.restore_results.pop(0) if self.restore_results else (0, "")
            if code == 0 and self.on_restore is not None:
                self.on_restore(script)
            return Completed(tuple(argv), code, "", err)
        if "--version" in argv:
            return Completed(tuple(argv), 0, self.version, "")
        if argv[-1] == POSTROUTING or argv[-2:] == [POSTROUTING, "-v"]:
            return Completed(tuple(argv), 0, self.post, "")
        if self.chain is None:
            return Completed(tuple(argv), 1, "", "iptables: No chain/target/match by that name.\n")
        return Completed(tuple(argv), 0, self.chain, "")

    def binaries(self) -> list[str]:
        return [c[0] for c in self.calls]


@dataclass
class FakeKernel:
    """Answers the cheap kernel questions (netlink, /proc) instead of the host.

    ``chains`` None means "cannot tell", so the agent falls back to listing with the fake
    iptables; ``legacy`` lists the x_tables tables (none: no legacy leftovers possible).
    """

    gen: int | None = None
    tables: set[tuple[str, str]] = field(default_factory=set)
    chains: set[tuple[str, str, str]] | None = None
    legacy: frozenset[str] = frozenset()

    def generation(self) -> int | None:
        return self.gen

    def table_exists(self, family: str, name: str) -> bool | None:
        return (family, name) in self.tables

    def chain_exists(self, family: str, table: str, chain: str) -> bool | None:
        return None if self.chains is None else (family, table, chain) in self.chains

    def legacy_tables(self, family: str) -> frozenset[str] | None:
        return self.legacy

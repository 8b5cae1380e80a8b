"""ip-masq-agent: decide which pod traffic keeps its source address and which is MASQUERADEd.

The public, typed library API is exactly ``__all__``, documented in docs/library.md:
the names ``masq._api`` imports (listed there once) and ``__version__``.  Everything
here is pure (no I/O): feed it file text and kernel listings, get back decisions, rules
and transaction scripts.  Expected input errors come back as ``returns`` ``Failure``
values carrying a ``ConfigError``; nothing here raises for bad input.  ``masq.core`` and
``masq.shell`` are internal: their module paths may change between releases, the names
in ``__all__`` will not.

The API is loaded on first use (PEP 562): importing ``masq`` (as every ``masq.shell``
module does) loads none of it, so the agent's start-up pays only for the modules its
mode needs.  Type checkers read the star import below, so ``from masq import merge`` is
fully typed and ``masq.no_such_name`` is an error to them as it is at run time.  They do
not see ``__all__`` (a type checker would read a declared one as the only exports, and
a literal one would be a second list): code that wants the names reads them at run time.
"""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from masq._api import *  # noqa: F403  (the one list of public names)
else:
    import importlib

    def _load() -> dict[str, object]:
        """Every public name of ``masq._api``, bound here, and ``__all__`` derived from them."""
        api = importlib.import_module("masq._api")
        public = {name: value for name, value in vars(api).items() if not name.startswith("_")}
        globals().update(public, __all__=sorted([*public, "__version__"]))
        return public

    def __getattr__(name: str) -> object:
        if name == "__all__" or not name.startswith("_"):
            _load()
            if name in globals():
                return globals()[name]
        raise AttributeError(f"module 'masq' has no attribute {name!r}")

    def __dir__() -> list[str]:
        _load()
        return list(globals()["__all__"])

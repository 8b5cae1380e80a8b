"""Whether the tests run in CI, and what a test that cannot run does about it.

``CI`` is set (``1``, ``true`` or ``yes``, any case) by ``.ci/run`` and by CI services.
There a test whose environment is missing (root, ``ip netns``, nft, promtool, buildah)
fails, so a runner that cannot run it cannot pass by skipping; on a developer machine it
is skipped with the reason.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def cannot_run(reason: str) -> NoReturn:
    """Skip with ``reason``; under CI, fail with it."""
    if in_ci():
        pytest.fail(f"CI=true but this cannot run: {reason}", pytrace=False)
    pytest.skip(reason)

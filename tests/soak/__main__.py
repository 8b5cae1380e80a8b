"""Entry point: ``python -m tests.soak`` from the repository root.

The soak imports the integration harness as ``integration`` and itself as ``soak``, the
names pytest gives them (``tests/`` is not a package), so ``tests/`` goes on the path first.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soak.cli import main

sys.exit(main())

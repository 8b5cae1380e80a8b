"""Hypothesis profiles: a quick default for development, a heavy ``ci`` profile for .ci/run."""

import os

from hypothesis import HealthCheck, Phase, settings

settings.register_profile("default", max_examples=100, deadline=None)
settings.register_profile(
    "ci",
    max_examples=1000,
    deadline=None,
    print_blob=True,
    report_multiple_bugs=False,  # stop at the first falsifying example
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

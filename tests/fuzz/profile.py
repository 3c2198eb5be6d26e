"""Hypothesis settings shared by the fuzz tests.

JOBCTL_FUZZ_PROFILE picks the profile:
- `ci` (default): reproducible (derandomized, no example database), so a red CI run fails the same way
  on every machine and a green one stays green;
- `explore`: new random cases on every run, ten times as many: for hunting bugs on purpose.
JOBCTL_FUZZ_CASES sets the number of cases per entry point (default 1,000).

The settings are applied per test (`fuzz()`), never loaded globally, so the rest of the suite keeps its own.
"""

from __future__ import annotations

import math
import os

from hypothesis import HealthCheck, Phase, settings

CASES = int(os.environ.get("JOBCTL_FUZZ_CASES", "1000"))

settings.register_profile(
    "ci",
    max_examples=CASES,
    deadline=None,  # cases talk to a Temporal server: their time varies with the machine's load
    database=None,
    derandomize=True,
    print_blob=True,
    # Fixtures (server, worker) are shared by all cases on purpose; large and filtered inputs are wanted.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)
settings.register_profile("explore", parent=settings.get_profile("ci"), max_examples=CASES * 10, derandomize=False)
PROFILE = settings.get_profile(os.environ.get("JOBCTL_FUZZ_PROFILE", "ci"))


def fuzz(cases_per_example: int = 1, shrink: bool = True) -> settings:
    """The profile's settings for a test whose every example runs `cases_per_example` cases (a batch).

    shrink=False for batches of workflows: each shrinking step would rerun a whole batch (seconds), and
    their assertions already show the one case that failed."""
    phases = [p for p in PROFILE.phases if shrink or p not in (Phase.shrink, Phase.explain)]
    return settings(PROFILE, max_examples=math.ceil(PROFILE.max_examples / cases_per_example), phases=phases)

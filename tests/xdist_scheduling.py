"""How `bash launch/test.sh` spreads the suite over two pytest-xdist workers.

The 2-core machines this suite runs on are half idle in a serial run (processes starting,
daemons polling, timeouts running out), so two workers share the cores. The SLURM tests must
stay together: their session fixtures start this machine's daemons, and two one-node clusters
at once would share munged and the rendezvous ports derived from their job ids. pytest-xdist's
own `xdist_group` marks cannot say so on pytest 9.2, where the group suffix it writes into
`item._nodeid` is ignored (pytest-dev/pytest-xdist#1386), so the units of several tests are
named by file here, and `check_slurm_tests_are_listed` keeps the SLURM list true.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # xdist is imported only when a run has workers
    from xdist.remote import Producer
    from xdist.scheduler import LoadGroupScheduling

# Session fixtures that start SLURM daemons, and the test files that may use them.
SLURM_FIXTURES = frozenset({"slurm", "slurm_nodes", "slurm_recipe"})
SLURM_TEST_FILES = ("tests/slurm/", "tests/tracking/test_mlflow_ui.py")
# Work units of several tests, by name: the SLURM tests, which must share a worker, and the
# release tests, whose module fixture trains and scores a release (20 s): once, not per worker.
UNITS = {"slurm": SLURM_TEST_FILES, "release": ("tests/release/test_release.py",)}


def scope_of(nodeid: str) -> str:
    """The work unit of a test: the name of the unit its file is in, or the test alone."""
    for name, files in UNITS.items():
        if nodeid.startswith(files):
            return name
    return nodeid


def check_slurm_tests_are_listed(items: Iterable[pytest.Item]) -> None:
    """A test that starts SLURM outside SLURM_TEST_FILES would run beside the others' cluster
    under xdist: stop the session with its name instead."""
    for item in items:
        uses = SLURM_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses and not item.nodeid.startswith(SLURM_TEST_FILES):
            raise pytest.UsageError(
                f"{item.nodeid} uses {', '.join(sorted(uses))}: add its file to "
                "SLURM_TEST_FILES in tests/xdist_scheduling.py (its tests share one xdist worker)"
            )


def make_scheduler(config: pytest.Config, log: Producer) -> LoadGroupScheduling:
    """xdist's loadgroup scheduling with `scope_of` as the grouping, for any `--dist` that
    spreads tests over workers (`-n 2` alone means `load`; the others would split the SLURM
    tests too); `each` would run them on every worker, and is refused. The default reordering
    (the unit of most tests first) starts the SLURM and release units, the longest, at once."""
    from xdist.scheduler import LoadGroupScheduling

    if config.getvalue("dist") == "each":
        raise pytest.UsageError(
            "--dist each would start SLURM on every worker at once: use --dist loadgroup"
        )

    class SlurmTestsOnOneWorker(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return SlurmTestsOnOneWorker(config, log)

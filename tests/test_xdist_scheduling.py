"""The suite's own xdist scheduling (tests/xdist_scheduling.py): the SLURM tests in one unit."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from xdist_scheduling import check_slurm_tests_are_listed, scope_of


def test_slurm_and_release_tests_are_units_and_every_other_test_is_its_own():
    assert scope_of("tests/slurm/test_slurm_nodes.py::test_x") == "slurm"
    assert scope_of("tests/tracking/test_mlflow_ui.py::test_y[a]") == "slurm"
    assert scope_of("tests/release/test_release.py::test_r") == "release"
    other = "tests/tracking/test_tracking.py::test_z"
    assert scope_of(other) == other


def test_a_slurm_test_outside_the_listed_files_stops_the_session():
    listed = SimpleNamespace(nodeid="tests/slurm/test_slurm.py::t", fixturenames=["slurm"])
    elsewhere = SimpleNamespace(nodeid="tests/training/test_x.py::t", fixturenames=["slurm_nodes"])
    plain = SimpleNamespace(nodeid="tests/training/test_x.py::u", fixturenames=["tmp_path"])
    check_slurm_tests_are_listed([listed, plain])  # nothing to say
    with pytest.raises(pytest.UsageError, match=r"tests/training/test_x.py::t uses slurm_nodes"):
        check_slurm_tests_are_listed([listed, elsewhere])

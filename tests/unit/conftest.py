"""The ``speedups_impl`` fixture: every twin test runs on the pure-Python and the compiled module.

The compiled one is skipped when it is not built, unless ``FASTGW_EXTENSION=1`` says it must be
(CI), and under ``FASTGW_NO_EXTENSIONS=1``, which asks for a pure-Python run.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

import fastgw._speedups_py


def load_c_speedups() -> ModuleType:
    """The compiled module, or skip; a failure instead when the extension is required."""
    if os.environ.get("FASTGW_NO_EXTENSIONS"):
        pytest.skip("FASTGW_NO_EXTENSIONS is set")
    try:
        return importlib.import_module("fastgw._speedups")
    except ImportError as exc:
        if os.environ.get("FASTGW_EXTENSION") == "1":
            pytest.fail(f"FASTGW_EXTENSION=1 but fastgw._speedups does not import: {exc}")
        pytest.skip(f"fastgw._speedups is not built: {exc}")


# Session scope: hypothesis tests may use it (it holds no per-test state).
@pytest.fixture(scope="session", params=["py", "c"])
def speedups_impl(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "py":
        return fastgw._speedups_py
    return load_c_speedups()


@pytest.fixture(scope="session")
def c_speedups() -> ModuleType:
    """For parity tests, which compare the two modules directly."""
    return load_c_speedups()


@pytest.fixture(scope="session")
def py_speedups() -> ModuleType:
    return fastgw._speedups_py

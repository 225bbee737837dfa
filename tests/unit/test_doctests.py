"""Run every docstring example of the shipped packages, imported by their installed names.

(``--doctest-modules`` would import ``streams/codec.py`` as ``streams.codec``, a second copy of
the module beside ``procvault.streams.codec``.)
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import procvault

PACKAGES = ("procvault", "procvault.monitor", "procvault.streams", "procvault.generators")


def _modules() -> list[str]:
    names: list[str] = []
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        names.append(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg_name}."):
            if not info.name.endswith("__main__"):
                names.append(info.name)
    return sorted(set(names))


@pytest.mark.parametrize("module_name", _modules())
def test_docstring_examples(module_name: str) -> None:
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"


def test_version() -> None:
    assert procvault.__version__

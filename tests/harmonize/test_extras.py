"""The optional TorchIO and MONAI transforms: a missing library names its extra, and knotwork never imports it."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

EXTRAS = ["torchio", "monai"]


@pytest.mark.parametrize("lib", EXTRAS)
def test_missing_library_names_the_extra(monkeypatch, lib):
    pytest.importorskip(lib)
    for name in [n for n in sys.modules if n.split(".")[0] == lib]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    monkeypatch.delitem(sys.modules, f"knotwork.harmonize.{lib}", raising=False)
    with pytest.raises(ImportError, match=rf"pip install 'knotwork\[{lib}\]'"):
        importlib.import_module(f"knotwork.harmonize.{lib}")


@pytest.mark.parametrize("lib", EXTRAS)
def test_knotwork_harmonize_does_not_import_it(lib):
    code = f"import sys, knotwork.harmonize; assert {lib!r} not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

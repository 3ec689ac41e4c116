"""The Examples sections in the harmonize docstrings run and print what they claim."""

from __future__ import annotations

import doctest

import pytest

from knotwork.harmonize import functional, matchers, transforms


@pytest.mark.parametrize("module", [functional, matchers, transforms])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("name", ["torchio", "monai"])
def test_pipeline_docstring_examples(name):
    pytest.importorskip(name)
    import importlib

    module = importlib.import_module(f"knotwork.harmonize.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0

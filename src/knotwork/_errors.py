"""The one error hierarchy of knotwork: a base class, one subclass per capability, and the exit codes.

Every error a user can cause derives from :class:`KnotworkError` and carries a one-line message that names the
file, the item (module, volume, example id, row, worker) and what is wrong. The CLI prints that line and exits
with :attr:`KnotworkError.exit_code`: 2 for bad input or usage, 1 for a run that failed after it started.

The capability errors also derive from :class:`ValueError` (bad input is a value error, as in scikit-learn), so
``except ValueError`` keeps working for library users.
"""

from __future__ import annotations

#: Exit codes of every command: success, a run that failed, bad input or usage.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class KnotworkError(Exception):
    """Base of every error knotwork raises on purpose. ``exit_code`` is what the CLI exits with."""

    exit_code: int = EXIT_USAGE

    def __str__(self) -> str:
        # One line, always: a message built from a multi-line string or a KeyError's repr would break the
        # "one line naming the item" contract of the CLI.
        text = super().__str__() if len(self.args) != 1 else str(self.args[0])
        return " ".join(text.split())


class InputError(KnotworkError, ValueError):
    """Bad input or an impossible option (exit code 2)."""


class RunError(KnotworkError, RuntimeError):
    """A run that started and could not finish: diverged training, a lost worker (exit code 1)."""

    exit_code = 1


class OutputError(InputError):
    """An output path that knotwork may not write: an input, a folder holding an input, a non-knotwork file."""


class NotFittedError(InputError, AttributeError):
    """An estimator or aggregator used before ``fit`` (as scikit-learn's: both ValueError and AttributeError)."""


# One error type per capability, all under one base.
class MergeError(InputError):
    """LoRA merging (knotwork.merge, knotwork.lora): an adapter, module or merge option."""


class ZipitError(InputError):
    """ZipIt! (knotwork.zipit): a checkpoint, architecture, data set or merge option."""


class TrainError(InputError):
    """Dynamic Batch Adaptation (knotwork.train): a model, data set or optimizer option."""


class HarmonizeError(InputError):
    """Intensity harmonization (knotwork.harmonize): a volume, mask or parameter."""


class RelationsError(InputError):
    """Relation-extraction data (knotwork.relations): a data file, example id, label, patch or answer row."""


class JrrelpError(RelationsError):
    """JRRELP and ConvE (knotwork.relations.jrrelp): a data set, graph or training option."""


def check_positive_int(value: object, name: str, *, minimum: int = 1, error: type[InputError] = InputError) -> int:
    """Return ``value`` as an int, or raise ``error`` naming ``name`` when it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < minimum:
        raise error(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_finite(array: object, name: str, *, error: type[InputError] = InputError) -> None:
    """Raise ``error`` naming ``name`` and the count of NaN/inf entries when a float array is not finite.

    Accepts numpy arrays and torch tensors; integer arrays pass untouched.
    """
    import numpy as np

    kind = getattr(getattr(array, "dtype", None), "is_floating_point", None)
    if kind is not None:  # a torch tensor
        import torch

        if not (array.is_floating_point() or array.is_complex()):
            return
        bad = int((~torch.isfinite(array)).sum())
    else:
        arr = np.asarray(array)
        if arr.dtype.kind not in "fc":
            return
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise error(f"{name} holds {bad} non-finite value{'s' if bad != 1 else ''} (NaN or inf)")

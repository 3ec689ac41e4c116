"""Shared fixtures: the real data beside the project root, and a deterministic torch setup."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# PyKEEN's registries (class_resolver.contrib.torch) collect every subclass of torch's LR schedulers when first
# imported; once MONAI's optimizers are loaded (the MONAI tests) that finds two classes named ExponentialLR/LinearLR
# and raises RegistrationNameConflict. Building the registry before MONAI loads avoids the upstream clash, so the
# suite's order does not decide whether the PyKEEN tests pass (docs/integrations.md tells users the same).
try:
    import class_resolver.contrib.torch  # noqa: F401
except ImportError:  # pykeen (and class_resolver) are test-only; without them the PyKEEN tests skip
    pass

# Two CPU cores in CI: one intra-op thread per test process avoids oversubscription and keeps timings stable.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test with a clear message when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}; see shared/data/README.md")
    return SHARED_DATA


def require_shared(*parts: str) -> Path:
    """Path to ../shared/data/<parts>; skips when that file or folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path}; see shared/data/README.md")
    return path

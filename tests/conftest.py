"""Capability gates: a test marked `gpu` runs only where CUDA is present and is otherwise
reported as skipped with the reason (pytest -ra lists it), never silently dropped."""

import pytest


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marker gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

"""Benches and examples are scripts, not packages: tests load them as modules from their path."""

import importlib.util
from pathlib import Path


def load_script(path: Path, name: str):
    """The script at `path` executed as a module named `name` (not added to sys.modules)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

"""A user's model and data from the command line: `--model`, `--weights`, `--calibration`.

    --model package.module:factory     a callable returning the torch.nn.Module (imported)
    --model path/to/file.py:factory    the same, from a Python file
    --weights FILE.safetensors|.pt     its state dict (a .pt is read with weights_only=True)
    --calibration FILE.safetensors|.npy  a batch of real inputs

`--model` runs the user's own code, as `python -c "import package.module"` would; nothing else
here executes anything from a file: weights and inputs are read as plain tensors (safetensors,
numpy without pickle, torch.load(weights_only=True)), sizes checked before data is touched.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import stat
import sys
from pathlib import Path

import numpy as np
import torch

from .errors import VQ4AllError, printable

_SPEC = re.compile(r"^(?P<module>[^:]+):(?P<attr>[A-Za-z_][A-Za-z0-9_]*)$")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _regular_file(path, flag: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise VQ4AllError(f"{flag} {printable(path)}: no such file")
    if not stat.S_ISREG(path.stat().st_mode):
        raise VQ4AllError(f"{flag} {printable(path)}: not a regular file")
    return path


def load_factory(spec: str):
    """The callable named by `spec` ("package.module:factory" or "path/to/file.py:factory")."""
    match = _SPEC.match(spec or "")
    if not match:
        raise VQ4AllError(f"--model {printable(spec, 200)!r} must be package.module:factory or path/to/file.py:factory")
    where, attr = match["module"], match["attr"]
    try:
        if where.endswith(".py"):
            path = _regular_file(where, "--model")
            name = f"vq4all_user_model_{abs(hash(str(path.resolve())))}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module  # dataclasses and pickling-free tools look modules up by name
            module_spec.loader.exec_module(module)
        else:
            if not _MODULE_NAME.match(where):
                raise VQ4AllError(
                    f"--model {printable(where, 200)!r} is not a module name (package.module) or a .py file"
                )
            module = importlib.import_module(where)
    except ImportError as e:
        raise VQ4AllError(
            f"--model: cannot import {printable(where, 200)} ({printable(e, 300)}): install it or "
            "give the path of its .py file"
        ) from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise VQ4AllError(f"--model: {printable(where, 200)} has no attribute '{attr}'")
    if not callable(factory):
        raise VQ4AllError(f"--model: {printable(where, 200)}:{attr} is a {type(factory).__name__}, not a callable")
    return factory


def load_model(spec: str, weights=None) -> torch.nn.Module:
    """The module `spec`'s factory returns (called with no arguments), with `weights` loaded
    strictly (every entry present, every shape equal) when given. CPU, float32, eval mode."""
    model = load_factory(spec)()
    if not isinstance(model, torch.nn.Module):
        raise VQ4AllError(f"--model {printable(spec, 200)} returned a {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        load_weights(model, weights)
    return model.float().eval()


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """{name: tensor} from a .safetensors file or a .pt/.pth file (torch.load, weights_only)."""
    path = _regular_file(path, "--weights")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise VQ4AllError(
                f"--weights {printable(path)}: not a readable safetensors file ({printable(e, 200)})"
            ) from None
    elif path.suffix in (".pt", ".pth", ".bin"):
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 -- torch raises many types for a bad or unsafe file
            raise VQ4AllError(
                f"--weights {printable(path)}: cannot be read with torch.load(weights_only=True) "
                f"({type(e).__name__}: {printable(str(e).splitlines()[0] if str(e) else '', 200)}); "
                "save a plain state dict, or use .safetensors"
            ) from None
    else:
        raise VQ4AllError(
            f"--weights {printable(path)}: unknown suffix '{printable(path.suffix)}': give a .safetensors or .pt file"
        )
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise VQ4AllError(
            f"--weights {printable(path)}: must hold a state dict ({{name: tensor}}), got {type(state).__name__}"
        )
    return state


def load_weights(model: torch.nn.Module, path) -> None:
    """Load the state dict in `path` into `model`, naming the first missing, unexpected or
    differently shaped entry if it does not fit."""
    state = read_state_dict(path)
    target = model.state_dict()
    for key, value in target.items():
        if key not in state:
            raise VQ4AllError(f"--weights {printable(path)}: no entry '{key}' {list(value.shape)}, which the model has")
        if tuple(state[key].shape) != tuple(value.shape):
            raise VQ4AllError(
                f"--weights {printable(path)}: '{key}' is {list(state[key].shape)}, the model needs {list(value.shape)}"
            )
    extra = [k for k in state if k not in target]
    if extra:
        raise VQ4AllError(
            f"--weights {printable(path)}: entry '{printable(extra[0], 200)}' is not in the model "
            f"({len(extra)} such): is this the model's weight file?"
        )
    model.load_state_dict(state, strict=True)


def load_calibration(path):
    """A batch of real inputs: one tensor [N, ...] (float32 for float data, int64 for integer
    data such as token ids), or {name: tensor} when a .safetensors file holds several (passed
    as model(**inputs)). Every tensor needs N >= 1 rows, the same N, and finite values."""
    path = _regular_file(path, "--calibration")
    if path.suffix == ".npy":
        try:
            arrays = {"inputs": np.load(path, allow_pickle=False)}
        except (ValueError, OSError) as e:
            raise VQ4AllError(
                f"--calibration {printable(path)}: not a readable .npy array ({printable(e, 200)})"
            ) from None
    elif path.suffix == ".safetensors":
        from vq4all.artifact import read_safetensors

        arrays = read_safetensors(path)
    else:
        raise VQ4AllError(
            f"--calibration {printable(path)}: unknown suffix '{printable(path.suffix)}': give .safetensors or .npy"
        )
    if not arrays:
        raise VQ4AllError(f"--calibration {printable(path)}: holds no tensor")
    tensors, rows = {}, None
    for name, array in arrays.items():
        where = f"--calibration {printable(path)}: tensor '{printable(name, 200)}'"
        if array.ndim == 0 or array.shape[0] < 1:
            raise VQ4AllError(
                f"{where} of shape {list(array.shape)} holds no inputs: the first dimension counts inputs"
            )
        if rows is not None and array.shape[0] != rows:
            raise VQ4AllError(
                f"{where} has {array.shape[0]} rows, another tensor {rows}: every input needs the same count"
            )
        rows = array.shape[0]
        if array.dtype.kind == "f":
            if not np.isfinite(array).all():
                raise VQ4AllError(f"{where} holds NaN or Inf values")
            tensors[name] = torch.from_numpy(np.array(array, dtype=np.float32))
        elif array.dtype.kind in "iub":
            tensors[name] = torch.from_numpy(np.array(array, dtype=np.int64))
        else:
            raise VQ4AllError(f"{where} has dtype {array.dtype}: give float or integer inputs")
    return next(iter(tensors.values())) if len(tensors) == 1 else tensors

"""Blocks for block-wise reconstruction: which modules, checked; their inputs and outputs, cached.

    names = find_blocks(model, keys)                  # automatic: containers opened, see below
    plan = check_blocks(model, names, keys)           # {block: [its keys]}, or one clear error
    cache = BlockCache(folder)                        # .npy files, memory-mapped when read
    order = capture_outputs(net, inputs, plan, cache) # the teacher's block outputs, one pass
    capture_inputs(net, student, block, inputs, cache)  # a block's inputs in the student

A block is a module of the model (a state-dict prefix such as "encoder.layer.3") that the
network's forward calls once per forward, holding some of the weights to compress. Block-wise
reconstruction trains each block alone against the teacher's output of the same block, so a
step runs one block, not the network.

The automatic rule (`find_blocks`) starts from the model's top-level children that hold keys and
opens, repeatedly, a block that is a container (nn.Sequential, nn.ModuleList), that has a single
child holding keys, or that is the only block: so `model.encoder.layer` (a ModuleList of
transformer layers) becomes one block per layer, and a wrapper becomes what it wraps.

The cache keeps every calibration chunk (`CHUNK_ROWS` inputs, the same chunking in every pass,
so padded sequence lengths match) as plain .npy files in a folder, read back memory-mapped: the
operating system keeps them in RAM when it can and on disk otherwise. A module's call is stored
as its positional and keyword arguments: a tensor whose first dimension is the chunk's row count
is batched (stored, sliced by rows); anything else is a constant kept in memory, and must be the
same in every chunk.
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import VQ4AllError, printable
from .network import count_inputs, take_rows

#: calibration inputs per forward pass of a capture (at least the batch size)
CHUNK_ROWS = 64


def _holds(name: str, key: str) -> bool:
    return key.startswith(name + ".") if name else True


def find_blocks(model: nn.Module, keys) -> list[str]:
    """Module names of the automatic blocks of `model` for the state-dict `keys` to compress,
    in module order (see the module doc for the rule)."""
    keys = list(keys)

    def children_with_keys(name: str) -> list[str]:
        module = model.get_submodule(name) if name else model
        dot = name + "." if name else ""
        return [dot + child for child, _ in module.named_children() if any(_holds(dot + child, k) for k in keys)]

    blocks = children_with_keys("")
    changed = True
    while changed:
        changed = False
        out = []
        for name in blocks:
            inner = children_with_keys(name)
            container = isinstance(model.get_submodule(name), (nn.Sequential, nn.ModuleList))
            if inner and (container or len(inner) == 1 or len(blocks) == 1):
                out.extend(inner)
                changed = True
            else:
                out.append(name)
        blocks = out
    return blocks


def check_blocks(model: nn.Module, names, keys) -> dict[str, list[str]]:
    """{block name: the keys it holds}, in the order given, after checking that every name is a
    module of `model` (close matches suggested), none is listed twice or lies inside another, and
    each holds at least one key to compress. Keys in no block are trained by the end-to-end pass
    alone."""
    names = list(names)
    if not names:
        raise VQ4AllError(
            "the block list is empty: name at least one module, or leave blocks unset for the automatic ones"
        )
    modules = dict(model.named_modules())
    plan: dict[str, list[str]] = {}
    for name in names:
        if not isinstance(name, str) or not name or name not in modules:
            close = difflib.get_close_matches(str(name), [m for m in modules if m], n=3)
            raise VQ4AllError(
                f"block '{printable(name, 120)}' names no module of the model"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
                + ": give module names as in model.named_modules()"
            )
        if name in plan:
            raise VQ4AllError(f"block '{name}' is listed twice")
        for other in plan:
            if _holds(other, name) or _holds(name, other):
                raise VQ4AllError(f"blocks '{other}' and '{name}' overlap (one lies inside the other): list only one")
        held = [k for k in keys if _holds(name, k)]
        if not held:
            raise VQ4AllError(f"block '{name}' holds no weight to compress: leave it out of the block list")
        plan[name] = held
    return plan


# ------------------------------------------------------------------------------------ cache
class BlockCache:
    """Tensors of calibration chunks as .npy files in `folder` (created; removed by `close`).

    put(name, tensor) writes a file once; get(name, rows) reads rows of it (memory-mapped, so
    only those rows are read). Names are the cache's own ("out.3.c7"): never user text.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def put(self, name: str, tensor: torch.Tensor) -> None:
        array = tensor.detach().cpu().contiguous().numpy()
        np.save(self.folder / f"{name}.npy", array, allow_pickle=False)

    def get(self, name: str, rows: torch.Tensor | None = None) -> torch.Tensor:
        array = np.load(self.folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        picked = array if rows is None else array[np.sort(rows.numpy())]
        return torch.from_numpy(np.array(picked))

    def drop(self, prefix: str) -> None:
        """Delete the files whose name starts with `prefix` (a block's inputs once it is trained)."""
        for path in self.folder.glob(f"{prefix}*.npy"):
            path.unlink()

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def check_disk(folder: Path, needed: int, what: str) -> None:
    """VQ4AllError before anything is written when `folder`'s disk has less than `needed` bytes
    free (plus 5% and 64 MiB of headroom)."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed * 1.05 + (64 << 20) > free:
        raise VQ4AllError(
            f"{what} needs {needed / 2**30:.2f} GiB in {folder}, which has {free / 2**30:.2f} GiB free: "
            "point --block-cache at a larger disk, or lower --calibration-count"
        )


def _chunks(inputs, rows: int, desc: str | None = None):
    """(chunk index, the rows of `inputs` as one batch) over the calibration inputs; with `desc`,
    a progress bar of that name."""
    n = count_inputs(inputs)
    starts = range(0, n, rows)
    if desc is not None:
        from tqdm import tqdm

        starts = tqdm(starts, desc=desc, unit="chunk", leave=False, mininterval=0.5)
    for c, start in enumerate(starts):
        yield c, take_rows(inputs, torch.arange(start, min(start + rows, n)))


def first_tensor(output, block: str) -> torch.Tensor:
    """A module's output tensor: the output, or the first item of a tuple/list (an LSTM's
    sequence, a transformer layer's hidden states)."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise VQ4AllError(
            f"block '{block}' returns a {type(output).__name__}, not a tensor (or a tuple starting with one): "
            "choose modules that return tensors"
        )
    return output


class _Stop(BaseException):
    """Raised by a capture hook to end a forward pass once it has what it needs (a BaseException,
    so that no `except Exception` in a model's code swallows it)."""


class _Cached:
    """Stands for a batched argument in a stored call: the cache file `name`, sliced by rows."""

    def __init__(self, name: str):
        self.name = name


def capture_outputs(
    net, inputs, plan: dict[str, list[str]], cache: BlockCache, rows: int = CHUNK_ROWS, progress: bool = False
) -> list[str]:
    """One pass of the teacher over `inputs`, storing every block's output of chunk c as
    "out.<block index>.c<c>". Returns the block names in the order the forward runs them.

    Before anything is written, the first chunk's outputs give the whole cache's size, checked
    against the disk (`check_disk`). Raises VQ4AllError for a block that never runs or runs more
    than once per forward, or whose output has no batch dimension.
    """
    names = list(plan)
    n = count_inputs(inputs)
    order: list[str] = []
    held: dict[str, torch.Tensor] = {}

    def hook_for(name):
        def hook(_module, _args, output):
            if name in held:
                raise VQ4AllError(
                    f"block '{name}' runs more than once per forward (a shared or looped module): "
                    "choose blocks that run once, e.g. their parent"
                )
            # a copy: the forward may go on to change this tensor in place (a residual `x += ...`)
            held[name] = first_tensor(output, name).detach().clone()
            if name not in order:
                order.append(name)

        return hook

    handles = [net.model.get_submodule(name).register_forward_hook(hook_for(name)) for name in names]
    try:
        with torch.no_grad():
            for c, batch in _chunks(inputs, rows, "teacher block outputs" if progress else None):
                held.clear()
                net.forward(net.model, batch)
                missing = [name for name in names if name not in held]
                if missing:
                    raise VQ4AllError(
                        f"block '{missing[0]}' never runs in the network's forward: leave it out of the block list"
                    )
                size = count_inputs(batch)
                for name in names:
                    out = held[name]
                    if out.dim() == 0 or out.shape[0] != size:
                        raise VQ4AllError(
                            f"block '{name}' returns shape {list(out.shape)}, whose first dimension is not the "
                            f"batch ({size}): choose modules whose output is batch-first"
                        )
                if c == 0:
                    # all outputs, plus one block's inputs at a time (about its predecessor's output)
                    per_row = [held[name].nelement() * held[name].element_size() / size for name in names]
                    needed = int((sum(per_row) + max(per_row)) * n)
                    check_disk(cache.folder, needed, "the block cache (teacher outputs and block inputs)")
                for i, name in enumerate(names):
                    cache.put(f"out.{i}.c{c}", held[name])
    finally:
        for h in handles:
            h.remove()
    return order


class BlockInputs:
    """A block's calls on every calibration chunk: `batch(generator, size)` draws (args,
    kwargs, target output) of `size` rows of one chunk, chunks drawn in proportion to their rows."""

    def __init__(self, cache: BlockCache, index: int, calls: list[tuple[list, dict, int]]):
        self.cache, self.index, self.calls = cache, index, calls  # calls: (args, kwargs, rows) per chunk
        self.rows = torch.tensor([c[2] for c in calls], dtype=torch.float64)

    def batch(self, generator: torch.Generator, size: int):
        c = int(torch.multinomial(self.rows, 1, generator=generator))
        args, kwargs, rows = self.calls[c]
        idx = torch.randperm(rows, generator=generator)[:size].sort().values

        def fill(value):
            return self.cache.get(value.name, idx) if isinstance(value, _Cached) else value

        target = self.cache.get(f"out.{self.index}.c{c}", idx)
        return [fill(a) for a in args], {k: fill(v) for k, v in kwargs.items()}, target


def capture_inputs(
    net,
    student: nn.Module,
    block: str,
    index: int,
    inputs,
    cache: BlockCache,
    rows: int = CHUNK_ROWS,
    progress: bool = False,
) -> BlockInputs:
    """The inputs block `block` receives in `student` (whose earlier blocks are already trained),
    chunk by chunk: each forward stops as soon as the block is called. Batched tensors are stored
    as "in.<index>.c<chunk>.<position>"; constants must agree between chunks."""
    calls: list[tuple[list, dict, int]] = []
    constants: dict = {}
    state: dict = {}

    def keep(value, label: str, c: int, size: int):
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == size:
            name = f"in.{index}.c{c}.{label}"
            cache.put(name, value)
            return _Cached(name)
        if isinstance(value, torch.Tensor):
            same = label in constants and constants[label].shape == value.shape and torch.equal(constants[label], value)
        else:
            same = label in constants and constants[label] == value
        if label in constants and not same:
            raise VQ4AllError(
                f"block '{block}' takes an input ({label}) with no batch dimension that changes between "
                "batches: choose a block whose inputs are batch-first tensors"
            )
        constants[label] = value.detach().clone() if isinstance(value, torch.Tensor) else value
        return value

    def hook(_module, args, kwargs):
        c, size = state["chunk"], state["size"]
        stored_args = [keep(a, f"arg{i}", c, size) for i, a in enumerate(args)]
        stored_kwargs = {k: keep(v, f"kw_{k}", c, size) for k, v in kwargs.items()}
        calls.append((stored_args, stored_kwargs, size))
        raise _Stop

    handle = student.get_submodule(block).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            for c, batch in _chunks(inputs, rows, f"inputs of {block}" if progress else None):
                state.update(chunk=c, size=count_inputs(batch))
                try:
                    net.forward(student, batch)
                except _Stop:
                    continue
                raise VQ4AllError(
                    f"block '{block}' never runs in the network's forward: leave it out of the block list"
                )
    finally:
        handle.remove()
    return BlockInputs(cache, index, calls)

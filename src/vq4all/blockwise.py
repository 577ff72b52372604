"""Block-wise reconstruction: each block of the student trained alone against the teacher's output
of the same block (CompressConfig.mode "blockwise"; METHOD.md, "block-wise distillation").

    plan = block_plan(net, keys, config)     # {block: its keys}; bad blocks fail here, first
    reconstruct(run, plan, inputs)           # every block, in forward order

The teacher's block outputs on the calibration inputs are cached once (`vq4all.blocks`). Then,
block after block in the order the forward runs them, the block's inputs are captured from the
student, whose earlier blocks are already rebuilt (so a block learns to correct what came before
it), and the block trains for at most `block_steps` steps: a step runs this one block on a batch
of cached inputs, loss = mean squared error to the teacher's output over the teacher output's
variance, plus reg x the ratio penalty of the block's active sub-vectors. PNC freezes inside the
block after every step (with the linear schedule, the block's quota reaches 100% at its last
step); what is left is frozen by the finish rule when the block ends. The end-to-end pass that
follows is `vq4all.train`'s, over the whole network.

A checkpoint is written after every block, so an interrupted run resumes at its next block.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .assign import freeze_quota, ratio_penalty
from .blocks import BlockCache, capture_inputs, capture_outputs, check_blocks, find_blocks, first_tensor
from .errors import VQ4AllError, printable
from .rules import BLOCKWISE_ABOVE


def uses_blockwise(net, keys, config) -> bool:
    """Whether `config` trains `net` block-wise: mode "blockwise", or "auto" with more than
    BLOCKWISE_ABOVE weights in `keys`."""
    if config.mode != "auto":
        return config.mode == "blockwise"
    state = net.model.state_dict()
    return sum(state[k].numel() for k in keys) > BLOCKWISE_ABOVE


def block_plan(net, keys, config) -> dict[str, list[str]]:
    """{block module name: the keys it holds}: `config.blocks`, else the network's declared
    `blocks`, else `find_blocks`; checked by `check_blocks` (one clear error for a bad list)."""
    names = config.blocks or getattr(net, "blocks", ())
    if not names:
        names = find_blocks(net.model, keys)
        if not names:
            raise VQ4AllError(
                f"{net.name}: found no blocks (no child module holds a weight to compress): "
                "name blocks with --blocks / blocks=, or use --mode end_to_end"
            )
    return check_blocks(net.model, names, keys)


def check_calibration(n: int, config) -> None:
    """VQ4AllError when `n` calibration inputs are too few to train a block on batches of
    `config.batch_size` (a block fitted to a handful of inputs only memorises them)."""
    if n < max(2, config.batch_size):
        raise VQ4AllError(
            f"block-wise reconstruction needs at least batch_size={config.batch_size} calibration inputs "
            f"(and 2), got {n}: give more inputs, lower --batch-size, or use --mode end_to_end"
        )


def reconstruct(run, plan: dict[str, list[str]], inputs, *, cache_dir=None, checkpoint=None, progress=False) -> None:
    """Train every block of `plan` of `run.student` in forward order (see the module doc; the
    caller has checked the calibration size with `check_calibration`);
    appends one summary per block to `run.block_reports`. Blocks already done
    (`run.blocks_done`, from a resumed checkpoint) are skipped."""
    if run.blocks_done >= len(plan):
        return
    root = cache_root(cache_dir)
    _remove_stale_caches(Path(root or tempfile.gettempdir()))
    cache = BlockCache(tempfile.mkdtemp(prefix=f"vq4all-blocks-{os.getpid()}-", dir=root))
    try:
        order = capture_outputs(run.net, inputs, plan, cache, progress=progress)
        index = {name: i for i, name in enumerate(plan)}
        for position, name in enumerate(order):
            if position < run.blocks_done:
                continue
            data = capture_inputs(run.net, run.student, name, index[name], inputs, cache, progress=progress)
            summary = train_block(run, name, plan[name], data, position, len(order), progress)
            cache.drop(f"in.{index[name]}.")
            run.block_reports.append(summary)
            run.blocks_done = position + 1
            if checkpoint and _rank() == 0:  # under torchrun every rank trains the same blocks
                run.save(checkpoint)
    finally:
        cache.close()


def _remove_stale_caches(root: Path) -> None:
    """Delete block caches left by runs that were killed (their process is gone): a cache is
    gigabytes, and a killed process cannot clean up after itself."""
    for folder in root.glob("vq4all-blocks-*-*"):
        pid = folder.name.split("-")[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # another user's live process


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def cache_root(cache_dir) -> str | None:
    """`cache_dir` made ready for the block cache (created; must be a writable folder)."""
    if cache_dir is None:
        return None
    folder = Path(cache_dir)
    if folder.exists() and not folder.is_dir():
        raise VQ4AllError(f"block cache {printable(str(folder), 200)} is a file, not a folder: give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder)
        probe.close()
    except OSError as e:
        raise VQ4AllError(
            f"block cache {printable(str(folder), 200)} is not writable ({e.strerror}): give another folder"
        ) from None
    return str(folder)


def train_block(run, name: str, keys: list[str], data, position: int, count: int, progress: bool) -> dict:
    """Train block `name` (holding `keys`) of `run.student` on `data` (`vq4all.blocks.BlockInputs`);
    freeze what PNC has not. Returns the block's summary for the report."""
    cfg, start = run.config, time.perf_counter()
    module = run.student.get_submodule(name)
    params = {k: run.params[k] for k in keys}
    main = [q for q in module.parameters() if id(q) in run.main_ids]
    fp = [q for q in module.parameters() if q.requires_grad and id(q) not in run.main_ids]
    groups = [{"params": main, "lr": cfg.lr}] + ([{"params": fp, "lr": cfg.lr_fp}] if fp and cfg.lr_fp > 0 else [])
    optimizer = torch.optim.Adam(groups)
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + position)  # resumable: per block
    pnc = cfg.pnc and run.candidates
    total = sum(p.frozen.numel() for p in params.values()) if run.candidates else 0
    frozen = (lambda: sum(int(p.frozen.sum()) for p in params.values())) if run.candidates else (lambda: 0)
    passed = steps = 0
    losses: list[float] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.block_steps, desc=f"block {position + 1}/{count} {name}", unit="step", mininterval=0.5)
    try:
        while steps < cfg.block_steps and not (pnc and frozen() == total):
            args, kwargs, target = data.batch(generator, cfg.batch_size)
            out = first_tensor(module(*args, **kwargs), name)
            loss = F.mse_loss(out, target) / target.var().clamp_min(1e-12)
            total_loss = loss + cfg.reg * ratio_penalty(params) if cfg.reg > 0 and run.candidates else loss
            optimizer.zero_grad(set_to_none=True)
            total_loss.backward()
            optimizer.step()
            steps += 1
            losses.append(float(loss.detach()))
            if pnc:
                passed += sum(p.freeze_confident(cfg.alpha) for p in params.values())
                if cfg.schedule == "linear":
                    freeze_quota(params, math.ceil(total * steps / cfg.block_steps), cfg.finish)
            if bar is not None:
                bar.set_postfix(loss=f"{losses[-1]:.4f}", frozen=f"{frozen() / max(total, 1):.1%}")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if run.candidates:
        for p in params.values():
            p.freeze_rest(cfg.finish)
    with torch.no_grad():  # the loss of the block as it is kept: every sub-vector frozen
        args, kwargs, target = data.batch(generator, cfg.batch_size)
        out = first_tensor(module(*args, **kwargs), name)
        frozen_loss = float(F.mse_loss(out, target) / target.var().clamp_min(1e-12))
    run.passed_alpha += passed
    return {
        "block": name,
        "keys": len(keys),
        "subvectors": total,
        "steps": steps,
        "first_loss": losses[0] if losses else math.nan,
        "final_loss": losses[-1] if losses else math.nan,
        "frozen_loss": frozen_loss,
        "frozen_by_pnc": passed,
        "seconds": time.perf_counter() - start,
    }

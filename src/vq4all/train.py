"""Compression training: distillation of candidate ratios with Progressive Network Construction.

    result = compress(zoo.load("digits_cnn"), codebook, CompressConfig(), checkpoint="run.ckpt")
    save_network("digits.safetensors", result.artifact)

The FP model is the teacher; the student is a copy whose compressible weights are
`vq4all.assign.CandidateWeight` parametrizations. Only the logits, the row scales and the FP
leftovers (biases, norms) train; the codebook is frozen. After every optimiser step PNC freezes
each sub-vector whose largest ratio exceeds alpha; training stops when all are frozen or at the
step budget, and the rest are frozen to their argmax ("forced"; `finish="nearest"` takes the
candidate nearest to the current mixture instead). Without PNC the same budget is trained and
every sub-vector frozen by the finish rule at the end. The "linear" schedule adds a quota (frozen fraction >= step /
steps, most confident first) so that short budgets end fully constructed too.

Block-wise mode (`CompressConfig.mode`, `vq4all.blockwise`): every block is first rebuilt alone
against the teacher's output of that block, then `finetune_steps` end-to-end steps of this trainer
follow (running their whole budget: the scales and FP leftovers still learn once all is frozen).

Checkpoints (safetensors, atomic) hold the student, Adam's state and the batch sampler's RNG, so
`resume=True` continues an interrupted run to the same artifact bit for bit (same machine, same
thread count: CPU float arithmetic is then deterministic).

Data parallel: under `torchrun --nproc_per_node=P -m vq4all compress ...` every rank holds the
whole student, draws the same batch and trains on its 1/P share; gradients are averaged by one
all-reduce per step, so all ranks take identical steps and make identical PNC decisions. Only
rank 0 writes checkpoints and the artifact. The result equals one process's up to the order of
float additions in the gradient (a sub-vector near alpha can freeze a step apart).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .artifact import Codebook, NetworkArtifact, read_container
from .assign import CandidateWeight, freeze_quota, quantize_, ratio_penalty, unquantize_
from .blockwise import block_plan, cache_root, check_calibration, reconstruct, uses_blockwise
from .config import CompressConfig
from .errors import MAX_NAME_CHARS, ArtifactError, VQ4AllError, printable
from .importance import search_statistics
from .io import atomic_write_bytes
from .network import count_inputs, forward_batches, take_rows
from .rules import int_problem, shown

CHECKPOINT_FORMAT = "vq4all-checkpoint"
ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")  # what Adam (amsgrad off) keeps per parameter


def _damaged(path, what: str) -> VQ4AllError:
    return VQ4AllError(f"{printable(path)}: damaged checkpoint ({what}): delete it and run without --resume")


def _plain(value):
    """A JSON round trip's view of an optimiser setting: tuples as lists."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _tensor_like(array: np.ndarray, like: torch.Tensor, name: str, bad) -> torch.Tensor:
    """`array` as a tensor, if it has the dtype and shape of `like`; else bad(...)."""
    tensor = torch.from_numpy(np.array(array))  # a writable copy
    if tensor.dtype != like.dtype or tuple(tensor.shape) != tuple(like.shape):
        raise bad(
            f"tensor '{printable(name, MAX_NAME_CHARS)}' is {str(tensor.dtype).removeprefix('torch.')} "
            f"{list(tensor.shape)[:8]}, this run's is {str(like.dtype).removeprefix('torch.')} {list(like.shape)}"
        )
    return tensor


@dataclass
class Result:
    """What `compress` returns: the artifact, and a report of the run (steps, losses, frozen
    counts, forced count, largest ratios at the end of training)."""

    artifact: NetworkArtifact
    report: dict = field(default_factory=dict)
    max_ratios: np.ndarray | None = None  # [S_total] float32: largest ratio per sub-vector before the final freeze
    model: torch.nn.Module | None = None  # the trained student, its weights plain tensors again


def distill_loss(kind, student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """kl: KL(teacher || student) on softmax(logits / T) * T^2; cosine: 1 - mean cosine;
    mse: mean squared error over the teacher's variance (so 1.0 = predicting the mean);
    a callable: kind(student, teacher), which must return a finite scalar tensor."""
    if callable(kind):
        loss = kind(student, teacher)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise VQ4AllError(
                f"the loss callable returned {type(loss).__name__} "
                f"{list(loss.shape) if isinstance(loss, torch.Tensor) else ''}: it must return a scalar tensor"
            )
        return loss.reshape(())
    if kind == "kl":
        t = temperature
        return (
            F.kl_div(
                F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), log_target=True, reduction="batchmean"
            )
            * t
            * t
        )
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1).mean()
    if kind == "mse":
        return F.mse_loss(student, teacher) / teacher.var().clamp_min(1e-12)
    raise VQ4AllError(f"unknown distillation loss '{kind}'")


class FeatureTaps:
    """Forward hooks that keep the outputs of named modules during one forward pass.

    Used for the layer-wise feature loss: the same module names are tapped in the teacher and
    the student, so `feature_loss(student_taps, teacher_taps)` compares layer by layer. An LSTM
    returns (output, state): its output sequence is kept.
    """

    def __init__(self, model: torch.nn.Module, names):
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [model.get_submodule(name).register_forward_hook(self._keep(name)) for name in names]

    def _keep(self, name):
        def hook(_module, _inputs, output):
            self.outputs[name] = output[0] if isinstance(output, tuple) else output

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def feature_loss(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over tapped layers of mean((s - t)^2) / mean(t^2): each layer counts the same,
    whatever its activations' magnitude."""
    terms = [F.mse_loss(student[k], t) / t.pow(2).mean().clamp_min(1e-12) for k, t in teacher.items()]
    return torch.stack(terms).mean()


def _world() -> tuple[int, int]:
    """(rank, world size) of the data-parallel group, (0, 1) when not distributed."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _average_gradients(optimizer: torch.optim.Optimizer, world: int) -> None:
    """All-reduce every gradient of the optimiser's parameters to the mean over ranks (one
    flattened buffer per call: few messages)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def init_distributed() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPU.
    Returns whether this process is one of several."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    dist = torch.distributed
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return True


def _history(columns, table, step: int, bad) -> list[dict]:
    """The loss history of a checkpoint: `history_columns` (names, "step" first) and the float64
    tensor `history` [step, columns], one row per step 1..step, every value finite."""
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise bad("history_columns must be a list of names")
    if table is None:
        raise bad("tensor 'history' is missing")
    if table.dtype != np.float64 or table.shape != (step, len(columns)):
        raise bad(f"tensor 'history' must be float64 [{step}, {len(columns)}], got {table.dtype} {list(table.shape)}")
    if step and (columns[:1] != ["step"] or not {"loss", "distill", "frozen"} <= set(columns)):
        raise bad("history_columns must start with step and hold loss, distill and frozen")
    if not np.isfinite(table).all() or (step and not np.array_equal(table[:, 0], np.arange(1, step + 1))):
        raise bad("tensor 'history' is not the record of steps 1..step")
    return [{c: (int(v) if c == "step" else float(v)) for c, v in zip(columns, row)} for row in table.tolist()]


class _Run:
    """The state of one distillation run: student, optimiser, sampler; checkpoint I/O.

    params: the student's weight parametrizations ({state-dict key: module}); main: the
    parameters trained at `config.lr` (candidate logits, or per-layer codebooks for the k-means
    baseline); every other trainable parameter of the student (biases, norms, scales) trains at
    `config.lr_fp`. `tag` names what the run is built on (the codebook hash), checked on resume.
    """

    def __init__(
        self,
        net,
        config: CompressConfig,
        student: torch.nn.Module,
        params: dict,
        main: list[torch.nn.Parameter],
        tag: str,
    ):
        config = config.for_network(net)
        self.net, self.config, self.student, self.params, self.tag = net, config, student, params, tag
        self.keys = list(params)
        self.student.eval()  # norms use their running statistics; dropout off
        self.main_ids = main_ids = {id(p) for p in main}
        fp = [p for p in self.student.parameters() if p.requires_grad and id(p) not in main_ids]
        groups = [{"params": main, "lr": config.lr}]
        if fp and config.lr_fp > 0:
            groups.append({"params": fp, "lr": config.lr_fp})
        else:
            for p in fp:
                p.requires_grad_(False)
        self.optimizer = torch.optim.Adam(groups)
        self.sampler = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.history: list[dict] = []
        self.candidates = all(isinstance(p, CandidateWeight) for p in params.values())
        self.total = sum(p.frozen.numel() for p in params.values()) if self.candidates else 0
        self.forced = 0  # sub-vectors frozen without passing alpha (the linear schedule's quota)
        self.passed_alpha = 0  # sub-vectors PNC froze because their largest ratio passed alpha
        self.blocks_done = 0  # block-wise mode: blocks reconstructed so far, in forward order
        self.block_reports: list[dict] = []
        # the end-to-end pass after block-wise reconstruction trains its whole budget even when
        # every sub-vector is frozen (the scales and FP leftovers still learn); `budget` is that
        # pass's step count, the linear schedule's 100% point
        self.finetune = False
        self.budget = config.steps
        # the layers whose outputs the feature loss compares: the owners of the compressed weights
        self.tapped = sorted({key.rpartition(".")[0] for key in self.keys})

    # ------------------------------------------------------------------ checkpoints
    def save(self, path) -> None:
        from safetensors.torch import save

        tensors = {f"student.{k}": v.detach().clone().contiguous() for k, v in self.student.state_dict().items()}
        opt = self.optimizer.state_dict()
        for index, state in opt["state"].items():
            for name, value in state.items():
                tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value).clone().contiguous()
        tensors["sampler"] = self.sampler.get_state()
        # the loss history as a tensor, not JSON: a million steps stay far below the header bound
        columns = list(self.history[0]) if self.history else []
        tensors["history"] = torch.tensor(
            [[entry[c] for c in columns] for entry in self.history], dtype=torch.float64
        ).reshape(len(self.history), len(columns))
        meta = {
            "format": CHECKPOINT_FORMAT,
            "network": self.net.name,
            "codebook_sha256": self.tag,
            "config": self.config.to_dict(),
            "step": self.step,
            "history_columns": columns,
            "forced": self.forced,
            "passed_alpha": self.passed_alpha,
            "blocks_done": self.blocks_done,
            "block_reports": self.block_reports,
            "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]],
        }
        atomic_write_bytes(path, save(tensors, metadata={"vq4all": json.dumps(meta)}))

    def load(self, path, blocks: int | None = None) -> None:
        """Restore the run from the checkpoint at `path`, after checking every field it holds
        against this run (the network, codebook and configuration, each tensor's name, dtype and
        shape, the optimiser's hyper-parameters and state, the counters' ranges): a checkpoint
        edited or damaged in any way is refused with one line, and nothing of the run changes.
        blocks: the block-wise plan's block count (None: an end-to-end run)."""
        path = Path(path)
        if not path.is_file():
            raise VQ4AllError(f"{printable(path)}: no checkpoint to resume from: run without --resume first")
        try:
            meta, arrays = read_container(path)  # the artifact reader's checked parse: no pickle, bounded sizes
        except ArtifactError as e:
            where = f"tensor '{printable(e.tensor, MAX_NAME_CHARS)}': " if e.tensor else ""
            raise _damaged(path, where + printable(e.rule, 4 * MAX_NAME_CHARS)) from None
        try:
            self._restore(path, meta, arrays, blocks)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, OverflowError) as e:
            # a check above missed something torch refuses: still one line, still "damaged"
            raise _damaged(path, f"{e.__class__.__name__}: {printable(' '.join(str(e).split()), 200)}") from None

    def _restore(self, path, meta: dict, arrays: dict, blocks: int | None) -> None:
        """Check everything, then apply it (see `load`)."""

        def bad(what: str) -> VQ4AllError:
            return _damaged(path, what)

        if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
            raise VQ4AllError(f"{printable(path)}: not a vq4all checkpoint: give the file the interrupted run wrote")
        if meta.get("network") != self.net.name or meta.get("codebook_sha256") != self.tag:
            raise VQ4AllError(
                f"{printable(path)}: checkpoint of {printable(meta.get('network'), MAX_NAME_CHARS)} on codebook "
                f"{printable(str(meta.get('codebook_sha256'))[:16])}..., not of {printable(self.net.name, MAX_NAME_CHARS)} "
                f"on {self.tag[:16]}...: resume with the same network and codebook"
            )
        saved_config = meta.get("config")
        if not isinstance(saved_config, dict):
            raise bad("no configuration")
        try:
            saved_config = CompressConfig.from_dict(saved_config)
        except (VQ4AllError, TypeError, ValueError) as e:
            raise bad(f"configuration: {printable(e, 200)}") from None
        if saved_config != self.config:
            raise VQ4AllError(
                f"{printable(path)}: checkpoint was made with another configuration: resume with the same flags"
            )
        cfg = self.config

        # ---- counters
        def count(name: str, lo: int, hi: int, default=None) -> int:
            value = meta.get(name, default)
            problem = int_problem(name, value, lo, hi)
            if problem:
                raise bad(problem)
            return int(value)

        budget = cfg.steps if blocks is None else cfg.finetune_steps
        step = count("step", 0, budget)
        blocks_done = count("blocks_done", 0, blocks or 0, 0)
        if blocks is not None and blocks_done < blocks and step:
            raise bad(f"step={step} of the end-to-end pass before all {blocks} blocks are done")
        total = self.total
        forced = count("forced", 0, total, 0)
        passed_alpha = count("passed_alpha", 0, total - forced, 0)
        history = _history(meta.get("history_columns"), arrays.pop("history", None), step, bad)
        block_reports = meta.get("block_reports", [])
        if not isinstance(block_reports, list) or len(block_reports) != blocks_done:
            raise bad(f"block reports do not match blocks_done={blocks_done}")
        for i, report in enumerate(block_reports):
            if not isinstance(report, dict) or int_problem("steps", report.get("steps"), 0, cfg.block_steps):
                raise bad(f"block report {i} is not the summary of a block")

        # ---- tensors: exactly the names this run saves, each of the live dtype and shape
        live = self.student.state_dict()
        student, state, sampler = {}, {}, None
        for name, array in arrays.items():
            if name.startswith("student."):
                key = name[len("student.") :]
                if key not in live:
                    raise bad(f"tensor '{printable(name, MAX_NAME_CHARS)}' is no part of {printable(self.net.name)}")
                student[key] = _tensor_like(array, live[key], name, bad)
            elif name.startswith("optimizer."):
                index, _, field = name[len("optimizer.") :].partition(".")
                if not index.isdigit() or field not in ADAM_STATE:
                    raise bad(f"tensor '{printable(name, MAX_NAME_CHARS)}' is no optimiser state")
                state.setdefault(int(index), {})[field] = array
            elif name == "sampler":
                sampler = array
            else:
                raise bad(f"unknown tensor '{printable(name, MAX_NAME_CHARS)}'")
        missing = sorted(set(live) - set(student))
        if missing:
            raise bad(f"tensor 'student.{printable(missing[0], MAX_NAME_CHARS)}' is missing")
        self._check_student(student, bad)
        opt = self.optimizer.state_dict()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        restored_state = {}
        for index, fields_ in sorted(state.items()):
            if index >= len(params):
                raise bad(f"optimiser state {index} of a parameter this run does not have ({len(params)} train)")
            if set(fields_) != set(ADAM_STATE):
                lacking = ", ".join(sorted(set(ADAM_STATE) - set(fields_)))
                raise bad(f"optimiser state {index} lacks {lacking}")
            param = params[index]
            moments = {}
            for field_ in ("exp_avg", "exp_avg_sq"):
                moments[field_] = _tensor_like(fields_[field_], param.detach(), f"optimizer.{index}.{field_}", bad)
                if not bool(torch.isfinite(moments[field_]).all()) or (
                    field_ == "exp_avg_sq" and bool((moments[field_] < 0).any())
                ):
                    raise bad(f"optimiser state optimizer.{index}.{field_} holds impossible values")
            count_ = _tensor_like(fields_["step"], torch.zeros((), dtype=torch.float32), f"optimizer.{index}.step", bad)
            value = float(count_)
            if not (0 <= value <= step and value == int(value)):
                raise bad(f"optimiser state optimizer.{index}.step={value:g} must be a whole number in 0..{step}")
            restored_state[index] = {"step": count_, **moments}
        groups = meta.get("param_groups")
        if not isinstance(groups, list) or len(groups) != len(opt["param_groups"]):
            raise bad(f"{len(opt['param_groups'])} optimiser parameter groups expected")
        for i, (group, saved) in enumerate(zip(opt["param_groups"], groups)):
            if not isinstance(saved, dict):
                raise bad(f"optimiser parameter group {i} is not a mapping")
            for key, value in saved.items():
                expected = group.get(key)
                if key == "params" or key not in group or _plain(value) != _plain(expected):
                    raise bad(
                        f"optimiser {printable(key, 40)}={printable(shown(value), 60)} in group {i}, "
                        f"not this run's {printable(shown(_plain(expected)), 60)}"
                    )
        live_sampler = self.sampler.get_state()
        if sampler is None:
            raise bad("tensor 'sampler' is missing")
        sampler = _tensor_like(sampler, live_sampler, "sampler", bad)

        # ---- everything checked: apply
        self.student.load_state_dict(student)
        opt["state"] = restored_state
        self.optimizer.load_state_dict(opt)  # the hyper-parameters are this run's (checked equal)
        self.sampler.set_state(sampler)
        self.step = step
        self.history = history
        self.forced = forced
        self.passed_alpha = passed_alpha
        self.blocks_done = blocks_done
        self.block_reports = block_reports

    def _check_student(self, student: dict[str, torch.Tensor], bad) -> None:
        """The student's trained tensors finite; every candidate and chosen codeword an index
        into the codebook, every chosen one among its sub-vector's candidates."""
        trained = {name for name, p in self.student.named_parameters() if p.requires_grad}
        for key in trained & set(student):
            if student[key].is_floating_point() and not bool(torch.isfinite(student[key]).all()):
                raise bad(f"tensor 'student.{printable(key, MAX_NAME_CHARS)}' holds NaN or Inf")
        prefixes = {id(module): name for name, module in self.student.named_modules()}
        for key, param in self.params.items():
            prefix = prefixes.get(id(param))
            if not isinstance(param, CandidateWeight) or prefix is None:
                continue
            cand, chosen = student[f"{prefix}.cand"], student[f"{prefix}.chosen"]
            k = param.values.shape[0]
            if cand.numel() and (int(cand.min()) < 0 or int(cand.max()) >= k):
                raise bad(f"candidates of {printable(key, MAX_NAME_CHARS)} outside the codebook's 0..{k - 1}")
            if chosen.numel() and not bool((cand.long() == chosen.unsqueeze(1)).any(1).all()):
                raise bad(f"a chosen codeword of {printable(key, MAX_NAME_CHARS)} is none of its candidates")

    # ------------------------------------------------------------------ training
    def _freeze_quota(self, target: int) -> int:
        """`vq4all.assign.freeze_quota` over all of the run's weights."""
        return freeze_quota(self.params, target, self.config.finish)

    def frozen_count(self) -> int:
        return sum(int(p.frozen.sum()) for p in self.params.values())

    def frozen_fraction(self) -> float:
        return self.frozen_count() / self.total if self.total else 0.0

    def train(self, inputs, teacher_out, labels, checkpoint, progress: bool, until: int) -> None:
        """Optimiser steps (with PNC) until step `until`, or until every sub-vector is frozen."""
        cfg = self.config
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                total=until,
                initial=self.step,
                desc=f"compress {printable(self.net.name, 60)}",
                unit="step",
                mininterval=0.5,
            )
        pnc = cfg.pnc and self.candidates
        taps = None
        if cfg.feature_weight > 0:
            taps = (FeatureTaps(self.net.model, self.tapped), FeatureTaps(self.student, self.tapped))
        try:
            self._steps(inputs, teacher_out, labels, checkpoint, bar, until, pnc, taps)
        finally:
            if taps is not None:
                for t in taps:
                    t.remove()
            if bar is not None:
                bar.close()

    def _steps(self, inputs, teacher_out, labels, checkpoint, bar, until, pnc, taps) -> None:
        cfg, n_data = self.config, count_inputs(inputs)
        rank, world = _world()
        while self.step < until and (self.finetune or not pnc or self.frozen_fraction() < 1.0):
            # Every rank draws the same batch (same sampler state) and takes its share of it;
            # averaging the ranks' gradients then gives the whole batch's gradient.
            idx = torch.randperm(n_data, generator=self.sampler)[: cfg.batch_size][rank::world]
            batch = take_rows(inputs, idx)
            if taps is not None:
                with torch.no_grad():  # the teacher's layer outputs on this batch (its logits are cached)
                    self.net.forward(self.net.model, batch)
            out = self.net.forward(self.student, batch)
            # each term kept apart for the history: the distillation loss alone is what the report
            # calls the loss; the penalty and the other terms are reported beside it
            terms = {"distill": distill_loss(self.net.distill, out, teacher_out[idx], cfg.temperature)}
            if taps is not None:
                terms["feature"] = cfg.feature_weight * feature_loss(taps[1].outputs, taps[0].outputs)
            if labels is not None and cfg.task_weight > 0:
                terms["task"] = cfg.task_weight * F.cross_entropy(out, labels[idx])
            if cfg.reg > 0 and self.candidates:
                terms["penalty"] = cfg.reg * ratio_penalty(self.params)
            loss = torch.stack(list(terms.values())).sum()
            if not loss.requires_grad:
                # every sub-vector frozen and the FP leftovers not trained (lr_fp = 0): the
                # fine-tuning pass has nothing left to learn, so it ends here
                break
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            values = torch.stack([t.detach() for t in terms.values()])
            if world > 1:
                _average_gradients(self.optimizer, world)
                values = values.clone()
                torch.distributed.all_reduce(values)
                values /= world
            self.optimizer.step()
            self.step += 1
            if pnc:
                self.passed_alpha += sum(p.freeze_confident(cfg.alpha) for p in self.params.values())
                if cfg.schedule == "linear":
                    self.forced += self._freeze_quota(math.ceil(self.total * self.step / self.budget))
            frozen = self.frozen_fraction()
            entry = {"step": self.step, "loss": float(values.sum()), "frozen": frozen}
            entry.update({name: float(v) for name, v in zip(terms, values)})
            self.history.append(entry)
            if bar is not None:
                bar.set_postfix(distill=f"{entry['distill']:.4f}", frozen=f"{frozen:.1%}")
                bar.update(1)
            if checkpoint and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and rank == 0:
                self.save(checkpoint)


def distill(
    run: _Run,
    *,
    plan: dict[str, list[str]] | None = None,
    checkpoint=None,
    resume: bool = False,
    progress: bool = False,
    stop_after: int | None = None,
    block_cache=None,
    inputs=None,
) -> bool:
    """Train `run` on the network's calibration data against the FP teacher: block by block
    first when `plan` ({block: keys}, from `vq4all.blockwise.block_plan`) is given, then end to
    end (`config.finetune_steps` steps after blocks, else `config.steps`). block_cache: the
    folder for the block cache (default: the system's temporary folder).
    inputs: the calibration inputs when the caller has made them already.
    Returns False when it stopped early at `stop_after` end-to-end steps (the run is then unfinished)."""
    net, config = run.net, run.config
    if resume:
        if checkpoint is None:
            raise VQ4AllError("--resume needs the checkpoint file of the interrupted run")
        run.load(checkpoint, blocks=None if plan is None else len(plan))
    if inputs is None:
        inputs = net.calibration(config.calibration, seed=config.seed)
    labels = net.calibration_labels(config.calibration, seed=config.seed)
    if plan is not None:
        check_calibration(count_inputs(inputs), config)
    teacher_out = torch.cat(forward_batches(net, inputs, 64))
    if plan is not None:
        reconstruct(run, plan, inputs, cache_dir=block_cache, checkpoint=checkpoint, progress=progress)
        run.finetune, run.budget = True, config.finetune_steps
    budget = run.budget
    until = budget if stop_after is None else min(budget, stop_after)
    run.train(inputs, teacher_out, labels, checkpoint, progress, until=until)
    return until == budget


def compress(
    net,
    codebook: Codebook,
    config: CompressConfig | None = None,
    *,
    checkpoint=None,
    resume: bool = False,
    progress: bool = False,
    stop_after: int | None = None,
    block_cache=None,
) -> Result:
    """Rebuild `net` (a `vq4all.network.Network`) on `codebook` by distillation with PNC; see
    the module doc (and `vq4all.blockwise` for mode "blockwise").

    checkpoint: a file written every `config.checkpoint_every` steps (and after every block);
    resume: start from it. stop_after: end after this many end-to-end steps (for tests that
    interrupt a run), without finishing. block_cache: folder of the block-wise cache.
    """
    config = (config or CompressConfig()).for_network(net)
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    keys = net.compressible_keys(codebook.d)
    plan = inputs = None
    if uses_blockwise(net, keys, config):
        # a bad block list, too little data or an unusable cache folder fail here, before any work
        plan = block_plan(net, keys, config)
        inputs = net.calibration(config.calibration, seed=config.seed)
        check_calibration(count_inputs(inputs), config)
        cache_root(block_cache)
    position_weights = None
    if config.search != "plain":  # the candidates' distance follows the layers' inputs
        if inputs is None:
            inputs = net.calibration(config.calibration, seed=config.seed)
        position_weights = search_statistics(
            config.search,
            net,
            keys,
            inputs,
            config.batch_size,
            codebook=codebook,
            granularity=config.scale_granularity,
            progress=progress,
        )
    student = net.with_weights({})
    params = quantize_(
        student,
        keys,
        codebook,
        n=config.n,
        init=config.init,
        granularity=config.scale_granularity,
        weights=position_weights,
        progress=progress,
    )
    run = _Run(net, config, student, params, [p.logits for p in params.values()], codebook.sha256)
    finished = distill(
        run,
        plan=plan,
        checkpoint=checkpoint,
        resume=resume,
        progress=progress,
        stop_after=stop_after,
        block_cache=block_cache,
        inputs=inputs,
    )
    if not finished:
        return Result(None, {"steps": run.step, "stopped": True})

    with torch.no_grad():
        max_ratios = torch.cat(
            [torch.where(p.frozen, torch.ones(()), p.ratios().max(1).values) for p in run.params.values()]
        ).numpy()
        # counted where PNC freezes (freeze_confident), whatever the schedule; everything else
        # (the linear quota, the final freeze) was forced
        frozen_by_pnc = run.passed_alpha
        for p in run.params.values():
            p.freeze_rest(config.finish)
        forced = run.total - frozen_by_pnc
    layers = [p.layer_codes(key, codebook.k, config.scale_granularity) for key, p in run.params.items()]
    unquantize_(run.student, run.params)
    state = run.student.state_dict()
    compressed = set(run.keys)
    leftovers = {k: v.detach().cpu().numpy().copy() for k, v in state.items() if k not in compressed}
    total = frozen_by_pnc + forced
    report = {
        "network": net.name,
        "mode": "blockwise" if plan is not None else "end_to_end",
        "steps": run.step,
        "block_steps": sum(b["steps"] for b in run.block_reports),
        "blocks": run.block_reports,
        "subvectors": total,
        "frozen_by_pnc": frozen_by_pnc,
        "forced": forced,
        "forced_fraction": forced / total if total else 0.0,
        # the distillation loss alone; the penalty (reg x sum r(1-r)) and the total beside it
        "final_loss": run.history[-1]["distill"] if run.history else math.nan,
        "final_penalty": run.history[-1].get("penalty", 0.0) if run.history else math.nan,
        "final_total_loss": run.history[-1]["loss"] if run.history else math.nan,
        # every term of the last step's loss: distill, penalty, task, feature (those in use)
        "final_terms": {k: v for k, v in run.history[-1].items() if k not in ("step", "loss", "frozen")}
        if run.history
        else {},
        "seconds": time.perf_counter() - start,
        "config": config.to_dict(),
        "left_fp": net.skipped_keys(codebook.d),
    }
    artifact = NetworkArtifact(
        net.name,
        codebook.sha256,
        codebook.k,
        layers,
        leftovers,
        {
            "method": "vq4all",
            "compress": config.to_dict(),
            "report": {k: v for k, v in report.items() if k != "config"},
        },
    )
    return Result(artifact, report, max_ratios, run.student)

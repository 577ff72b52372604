"""The rules every layer of vq4all agrees on: codebook size k, sub-vector dimension d, stored
dtypes, scale granularities, and the names of the training choices.

One module, so that the config dataclasses, the artifact reader, the engine's config, the
simulator and the CLI's `choices` can never disagree. numpy only; nothing here imports torch.

Codes are log2(k)-bit unsigned indices stored as uint8 (k <= 256) or little-endian uint16.
"""

from __future__ import annotations

import numpy as np

from .errors import VQ4AllError

MIN_K, MAX_K = 2, 1 << 16  # codes are stored as U16 at most
MIN_D, MAX_D = 1, 64
CODEBOOK_DTYPES = ("int8", "float16")  # stored codeword precision (int8 with one float32 scale)
GRANULARITIES = ("none", "tensor", "channel")  # weight scale: 1, one per tensor, one per output row
INITS = ("equal", "inverse_distance")  # initial candidate ratios: the paper's, VQ4DiT's
# how a sub-vector's n candidates are ranked: plain squared distance, weighted by the mean
# square of the layer's inputs at each position (vq4all.importance), or by the layer's input
# second moments with each row coded one sub-vector at a time, the rest absorbing the error (vq4all.hessian),
# or the same with the moments measured block after block on the network whose earlier blocks are coded
SEARCHES = ("plain", "activations", "hessian", "sequential")
FINISH_RULES = ("argmax", "nearest")  # how a sub-vector frozen without passing alpha chooses
SCHEDULES = ("threshold", "linear")  # PNC alone, or PNC plus a frozen-fraction quota
DISTILL_LOSSES = ("kl", "cosine", "mse")
BANDWIDTH_RULES = ("scott", "silverman")
# training mode: block-wise reconstruction then an end-to-end pass, or end-to-end alone; "auto"
# takes block-wise for networks with more than BLOCKWISE_ABOVE weights to compress
MODES = ("auto", "blockwise", "end_to_end")
BLOCKWISE_ABOVE = 1_000_000

# Upper bounds of the run settings (the config dataclasses and the CLI's flags both check them):
# far above any useful value, low enough that no setting alone asks for an absurd allocation.
MAX_SEED = (1 << 32) - 1  # numpy's legacy and PCG64 seeding and torch all take 32-bit seeds
MAX_N = 256  # candidates per sub-vector: memory is S x n x 16 bytes (cand, logits, Adam moments)
MAX_STEPS = 1_000_000  # a step budget (steps, block_steps, finetune_steps, checkpoint_every)
MAX_CALIBRATION = 1 << 16  # calibration inputs held in memory with the teacher's outputs; batch size
#: calibration inputs of a compression run whose config leaves the count to the network
DEFAULT_CALIBRATION = 512
MAX_PER_NETWORK = 1 << 22  # sub-vectors pooled per network for the codebook KDE (4 M x d float32)
MAX_LLOYD_ITERS = 1000  # Lloyd refinement passes over the pool


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def k_problem(k) -> str | None:
    """Why `k` is not a valid codebook size, or None: a power of two in MIN_K..MAX_K."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        return f"k={k!r} must be an integer"
    if not (MIN_K <= k <= MAX_K and is_power_of_two(int(k))):
        return f"k={k} must be a power of two between {MIN_K} and {MAX_K}"
    return None


def d_problem(d) -> str | None:
    """Why `d` is not a valid sub-vector dimension, or None: an integer in MIN_D..MAX_D."""
    if not isinstance(d, (int, np.integer)) or isinstance(d, bool):
        return f"d={d!r} must be an integer"
    if not MIN_D <= d <= MAX_D:
        return f"d={d} must be between {MIN_D} and {MAX_D}"
    return None


def check_k(k, hint: str = " (e.g. --k 65536 or --k 256)") -> int:
    """`k` as an int, or VQ4AllError saying what a valid k is."""
    problem = k_problem(k)
    if problem:
        raise VQ4AllError(problem + hint)
    return int(k)


def check_d(d, hint: str = " (the default is 8)") -> int:
    """`d` as an int, or VQ4AllError saying what a valid d is."""
    problem = d_problem(d)
    if problem:
        raise VQ4AllError(problem + hint)
    return int(d)


def shown(value, limit: int = 40) -> str:
    """repr(value) cut to about `limit` characters (an int of more than 4300 digits has no repr)."""
    try:
        text = repr(int(value) if isinstance(value, np.integer) else value)
    except ValueError:
        return "<an integer of more than 4300 digits>"
    return text if len(text) <= limit else f"{text[:limit]}...({len(text) - limit} more characters)"


def int_problem(name: str, value, lo: int, hi: int) -> str | None:
    """Why `value` is not an integer in lo..hi, or None (one phrase, starting with `name=value`)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        return f"{name}={shown(value)} must be an integer"
    if value < lo:
        return f"{name}={shown(value)} must be >= {lo}"
    if value > hi:
        return f"{name}={shown(value)} must be <= {hi}"
    return None


def check_int(name: str, value, lo: int, hi: int) -> int:
    """`value` as an int, or VQ4AllError when it is not an integer in lo..hi."""
    problem = int_problem(name, value, lo, hi)
    if problem:
        raise VQ4AllError(problem)
    return int(value)


def check_choice(what: str, value, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`, else VQ4AllError naming `what` and the choices."""
    if value not in choices:
        raise VQ4AllError(f"{what} {value!r} must be one of {', '.join(choices)}")
    return value


def code_bits(k: int) -> int:
    """Bits of one code: log2(k)."""
    return int(k).bit_length() - 1


def code_dtype(k: int) -> np.dtype:
    """How codes are stored: uint8 when k <= 256, else little-endian uint16."""
    return np.dtype(np.uint8) if k <= 256 else np.dtype("<u2")

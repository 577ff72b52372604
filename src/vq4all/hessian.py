"""Second moments of each layer's inputs, and the candidate search that follows them
(CompressConfig.search = "hessian").

A layer computes y = W x. Changing a weight row w by e changes its output by e . x, whose mean
square over the inputs is e^T H e with H = E[x x^T] ([row, row], the layer's input second
moment). The plain search minimises |e|^2 sub-vector by sub-vector; "activations"
(`vq4all.importance`) keeps only H's diagonal. Neither sees correlated inputs: a 3x3 depthwise
filter whose taps nearly cancel on smooth images (an edge detector) has a tiny output, and a
codeword that is close in L2 but shifts the sum of the taps moves that output by far more than
the output itself. EfficientNet-Lite0's first two blocks lose all their signal that way at 2 bits.

`sequential_candidates` therefore follows the GPTQ/OBQ recipe, a sub-vector (d columns) at a
time, those whose inputs carry the most energy (trace of their diagonal block of H) first, as
GPTQ's "act order": the sub-vector's candidates are its nearest codewords under the
metric that charges an error e_b the output error left after the not-yet-coded columns have
compensated for it, e_b^T ([H^-1]_bb)^-1 e_b, and once the block is coded (its nearest
candidate), the rest of the row absorbs that error: w_rest -= e_b [H^-1]_bb^-1 [H^-1]_b,rest. With
the upper Cholesky factor U of H^-1 (U^T U = H^-1) both are cheap: ([H^-1]_bb)^-1 = (U_bb^T
U_bb)^-1, and the update is e_b U_bb^-1 U_b,rest (U_bb: the block's d x d diagonal block).

A Linear layer's positions are tokens (or whole samples), and each is weighed by the inverse of
its own output's mean square, H = E[x x^T / ms(W x)]: the search then minimises every token's
relative output error rather than the total. Transformers normalise each token (LayerNorm), and
a few "massive activation" tokens (MiniLM: outputs 35x the median token's) otherwise own
E[x x^T]: the search trades every other token's error for theirs. Measured on MiniLM's FFN
down-projections alone (hard assignment, the rest FP): embedding cosine 0.936 with the plain
search, 0.144 with the unweighted H, 0.962 with the weighted one. A convolution's positions stay
unweighted: its outputs are normalised per channel (BatchNorm), i.e. per row, which does not
change any row's codes.

Statistics are gathered on the teacher by intercepting `torch.nn.functional.linear`, `conv1d`
and `conv2d` while the calibration inputs run, so padding a module applies before its call
(EfficientNet's static "same" padding) is seen exactly:
- Linear [out, in]: one H [in, in] for every row, tokens weighed as above;
- Conv1d/Conv2d [out, in / groups, *kernel]: the im2col patches of each group (channel-major,
  the weight rows' order), one H [row, row] per group; a depthwise convolution has a group per
  input channel, so each of its rows has its own H;
- anything else (embeddings, Conv3d, recurrent weights, rows longer than MAX_ROW, a weight that
  never reaches those functions): no statistic (None), the plain search.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .errors import VQ4AllError, printable
from .network import forward_batches
from .search import nearest, smallest

MAX_ROW = 4096  # H is row x row float64 (128 MiB at 4096) and is inverted: longer rows go plain
MAX_BYTES = 4 << 30  # all layers' moments together; the layers past it keep the plain search
MAX_POSITIONS = 4096  # positions of one conv sample or one Linear call taken into H (seeded random subset)
DAMP = 0.01  # added to H's diagonal, times its mean: H stays invertible with dead inputs


class _Moments:
    """Running sums of x x^T for one weight: [groups, row, row] float64 plus a count."""

    def __init__(self, groups: int, row: int):
        self.sum = torch.zeros((groups, row, row), dtype=torch.float64)
        self.count = 0

    def add(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        """x: [groups, positions, row]; weight: None or [positions], each position's weight."""
        x = x.double()
        xw = x if weight is None else x * weight.double().view(1, -1, 1)
        self.sum += xw.transpose(1, 2) @ x
        self.count += x.shape[1]


def _subsample(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor | slice:
    """Which positions (dim -2) of x to keep: at most MAX_POSITIONS, chosen at random."""
    if x.shape[-2] <= MAX_POSITIONS:
        return slice(None)
    return torch.randperm(x.shape[-2], generator=generator)[:MAX_POSITIONS]


def token_weights(y: torch.Tensor) -> torch.Tensor:
    """1 / mean square of each output vector y [positions, out] (floored at 1% of the median):
    a Linear layer's positions are tokens, and weighing each by its own output's size makes every
    token's relative error count the same (the module doc says why)."""
    ms = (y.double() ** 2).mean(-1)
    return 1.0 / ms.clamp_min(0.01 * float(ms.median()) + 1e-30)


def _same_padding(x: torch.Tensor, kernel, dilation) -> tuple[torch.Tensor, int]:
    """x padded as padding="same" pads it (the extra zero on the right): returns (x, 0)."""
    widths = []
    for k, dl in reversed(list(zip(kernel, dilation))):
        total = dl * (k - 1)
        widths += [total // 2, total - total // 2]
    return F.pad(x, widths), 0


def _patches(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups) -> torch.Tensor | None:
    """im2col patches of one sample x [C, *spatial] for a conv weight [out, C/groups, *kernel]:
    [groups, positions, row] with row = C/groups * prod(kernel), channel-major; None if the
    call is not one this module reads (Conv3d, unknown padding)."""
    spatial = weight.dim() - 2
    if spatial not in (1, 2):
        return None
    kernel = tuple(weight.shape[2:])
    as_tuple = lambda v: (v,) * spatial if isinstance(v, int) else tuple(v)  # noqa: E731
    stride, dilation = as_tuple(stride), as_tuple(dilation)
    if isinstance(padding, str):
        if padding == "same":
            x, padding = _same_padding(x, kernel, dilation)
        elif padding == "valid":
            padding = 0
        else:
            return None
    padding = as_tuple(padding)
    x = x.unsqueeze(0)
    if spatial == 1:  # a 1-D conv is a 2-D conv over [L, 1]
        x, kernel = x.unsqueeze(-1), kernel + (1,)
        stride, dilation, padding = stride + (1,), dilation + (1,), padding + (0,)
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)[0]  # [C*kk, L]
    return cols.view(groups, -1, cols.shape[-1]).transpose(1, 2)


@contextlib.contextmanager
def _intercept(targets: dict[int, tuple[str, torch.Tensor]], moments: dict, seed: int):
    """While active, every F.linear / F.conv1d / F.conv2d call whose weight is one of `targets`
    ({id(weight): (key, weight)}) adds its inputs to moments[key]."""
    originals = {name: getattr(F, name) for name in ("linear", "conv1d", "conv2d")}
    generator = torch.Generator().manual_seed(seed)

    def target(weight):
        hit = targets.get(id(weight))
        return hit[0] if hit is not None and hit[1] is weight else None

    def record(key, groups, rows_of, outputs=None):
        """Add rows_of [groups, positions, row] to moments[key]; outputs [positions, out]: a Linear
        call's outputs (bias removed), which weigh its tokens (`token_weights`)."""
        row = rows_of.shape[-1]
        if row > MAX_ROW:
            return
        if key not in moments:
            held = sum(m.sum.numel() * 8 for m in moments.values())
            if held + groups * row * row * 8 > MAX_BYTES:
                return
            moments[key] = _Moments(groups, row)
        if moments[key].sum.shape != (groups, row, row):
            return
        keep = _subsample(rows_of, generator)
        weight = None if outputs is None else token_weights(outputs)[keep]
        moments[key].add(rows_of[..., keep, :], weight)

    def linear(x, weight, bias=None):
        out = originals["linear"](x, weight, bias)
        key = target(weight)
        if key is not None:
            y = (out.detach() if bias is None else out.detach() - bias.detach()).reshape(-1, weight.shape[0])
            record(key, 1, x.detach().reshape(1, -1, x.shape[-1]), y)
        return out

    def conv(name):
        def call(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
            key = target(weight)
            if key is not None and weight.shape[1] * int(np.prod(weight.shape[2:])) <= MAX_ROW:
                batch = x.detach()
                if batch.dim() == weight.dim() - 1:  # unbatched
                    batch = batch.unsqueeze(0)
                for sample in batch:
                    cols = _patches(sample, weight, stride, padding, dilation, groups)
                    if cols is None:
                        break
                    record(key, groups, cols)
            return originals[name](x, weight, bias, stride, padding, dilation, groups)

        return call

    F.linear, F.conv1d, F.conv2d = linear, conv("conv1d"), conv("conv2d")
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(F, name, fn)


def input_moments(
    net, keys, inputs, batch_size: int, *, seed: int = 0, progress: bool = False, warn: bool = True
) -> dict:
    """{key: H [groups, row, row] float64, or None} for the compressible weights `keys` of
    zoo/user network `net`: E[x x^T] of the inputs each weight row multiplies, over `inputs`
    (what `net.calibration(...)` returns) run through the teacher `net.model` in batches of
    batch_size. Row o of a weight with G groups uses H[o // (out_features // G)]. A weight this
    module cannot read (see the module doc), or past MAX_BYTES of moments in all, gets None, and
    one warning names those weights: they keep the plain search."""
    state = dict(net.model.named_parameters())
    targets = {id(state[k]): (k, state[k]) for k in keys if k in state}
    moments: dict[str, _Moments] = {}
    with _intercept(targets, moments, seed):
        forward_batches(net, inputs, batch_size, "input moments" if progress else None)
    out = {}
    for key in keys:
        m = moments.get(key)
        rows = int(state[key].shape[0]) if key in state else 0
        if m is None or m.count == 0 or rows % m.sum.shape[0]:
            out[key] = None
            continue
        out[key] = (m.sum / m.count).numpy()
    if warn:
        _warn_plain(out)
    return out


def _warn_plain(out: dict) -> None:
    """One warning naming the weights of `out` ({key: H or None}) that have no H."""
    plain = [printable(key, 120) for key, h in out.items() if h is None]
    if plain:
        shown = ", ".join(plain[:8]) + (f" and {len(plain) - 8} more" if len(plain) > 8 else "")
        warnings.warn(
            f"hessian search: no input moments for {shown} (not a Linear/Conv1d/Conv2d weight, rows over "
            f"{MAX_ROW} values, or past {MAX_BYTES >> 30} GiB of moments): the plain search codes them",
            stacklevel=3,
        )


def sequential_moments(
    net, keys, inputs, batch_size: int, codebook, granularity: str = "channel", *, seed: int = 0, progress: bool = False
) -> dict:
    """`input_moments` measured block after block (search = "sequential"): {key: H or None}.

    GPTQ's order: the H of a block's weights comes from the network whose earlier blocks already
    hold their coded weights (hard assignment by `sequential_candidates` on their own H, scales
    of `granularity`), so each block's codes answer the inputs it will really see, errors of the
    blocks before it included. Blocks: the network's declared `blocks`, else
    `vq4all.blocks.find_blocks`, taken in that order; weights in no block come last, with every
    block coded. Costs one pass over `inputs` and one hard assignment per block; the teacher
    `net.model` is not changed (a copy is coded)."""
    import copy

    from tqdm import tqdm

    from .blocks import check_blocks, find_blocks
    from .decode import decode_layer
    from .hard import assign

    keys = list(keys)
    names = getattr(net, "blocks", ()) or find_blocks(net.model, keys)
    plan = check_blocks(net.model, names, keys) if names else {}
    placed = {k for held in plan.values() for k in held}
    stages = list(plan.values()) + ([[k for k in keys if k not in placed]] if len(placed) < len(keys) else [])
    state = net.model.state_dict()
    coded = copy.copy(net)  # the same network, its model the teacher with the blocks coded so far
    decoded: dict[str, torch.Tensor] = {}
    out: dict = {}
    for held in tqdm(stages, desc="sequential moments", unit="block", disable=not progress, leave=False):
        coded.model = net.with_weights(decoded)
        h = input_moments(coded, held, inputs, batch_size, seed=seed, warn=False)
        out.update(h)
        weights = {k: state[k].detach().cpu().numpy() for k in held}
        for layer in assign(weights, codebook, granularity, position_weights=h):
            decoded[layer.param] = torch.from_numpy(decode_layer(layer, codebook).reshape(state[layer.param].shape))
    out = {k: out.get(k) for k in keys}
    _warn_plain(out)
    return out


def _factor(h: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor U of (H + damping)^-1 for H [g, row, row] float64: U^T U = H^-1."""
    h = h.clone()
    diag = h.diagonal(dim1=-2, dim2=-1)
    dead = diag <= 0  # an input that is always zero: any weight there is free
    diag += DAMP * diag.clamp_min(0).mean(-1, keepdim=True) + dead.double()
    for tries in range(4):
        try:
            return torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
        except RuntimeError:  # not positive definite in float64: damp more
            diag += DAMP * 10**tries * diag.mean(-1, keepdim=True)
    raise VQ4AllError("input moments stay singular after damping: use --search plain for this network")


def sequential_candidates(s, codewords: np.ndarray, n: int, h: np.ndarray, *, ordered: bool = True, device=None):
    """The n candidates of every sub-vector of split `s` under the error-feedback metric of H
    (module doc). s: `vq4all.subvectors.Split` ([out, m, d] normalised sub-vectors);
    codewords [k, d] float32; h: [groups, row, row] (`input_moments`); device: the nearest
    search's (the factorisation and the row updates run in float64 on the CPU); ordered: code
    the sub-vectors of a row by their inputs' energy, largest first (else left to right).
    Returns (indices [out * m, n] int64, distances [out * m, n] float32), row-major, nearest
    first: distances are the metric's, in the normalised units of the sub-vectors."""
    out_features, m, d = s.subvectors.shape
    row = m * d - s.pad
    h = torch.as_tensor(np.asarray(h, dtype=np.float64))
    if h.ndim != 3 or h.shape[1:] != (row, row) or out_features % h.shape[0]:
        raise VQ4AllError(f"input moments must be [groups, {row}, {row}] with groups dividing {out_features}")
    groups = h.shape[0]
    per_group = out_features // groups
    # the sub-vectors in order of their inputs' energy (trace of H's diagonal block), largest
    # first: the ones that matter most are coded while the most columns are left to absorb
    # their error (GPTQ's "act order", at sub-vector granularity so sub-vectors stay whole)
    spans = [(j * d, min(row, j * d + d)) for j in range(m)]
    energy = [float(h[:, c0:c1, c0:c1].diagonal(dim1=-2, dim2=-1).sum()) for c0, c1 in spans]
    order = sorted(range(m), key=lambda j: -energy[j]) if ordered else list(range(m))
    perm = torch.cat([torch.arange(*spans[j]) for j in order])
    h = h[:, perm][:, :, perm]
    u = _factor(h)
    cw = torch.as_tensor(np.asarray(codewords, dtype=np.float64))
    n = min(n, cw.shape[0])
    rows = torch.as_tensor(s.subvectors.reshape(out_features, m * d)[:, :row], dtype=torch.float64)
    rows = rows[:, perm].clone().view(groups, per_group, row)
    cand = torch.empty((groups, per_group, m, n), dtype=torch.int64)
    dist = torch.empty((groups, per_group, m, n), dtype=torch.float32)
    c1 = 0
    for j in order:  # c0:c1 are the block's columns in the permuted row
        c0, c1 = c1, c1 + spans[j][1] - spans[j][0]
        metric = torch.linalg.inv(u[:, c0:c1, c0:c1])  # [groups, t, t]: |(v - c) A|^2 is the metric
        cj = cw[:, : c1 - c0]
        if groups == 1:  # the plain search between v A and c A
            idx, val = nearest((rows[0, :, c0:c1] @ metric[0]).float(), (cj @ metric[0]).float(), n, device=device)
            cand[0, :, j], dist[0, :, j] = torch.from_numpy(idx), torch.from_numpy(val)
        else:  # a codebook transformed per group: groups in chunks of about 64 MiB
            chunk = max(1, (64 << 20) // (4 * cj.shape[0] * (c1 - c0 + per_group)))
            for g0 in range(0, groups, chunk):
                a = metric[g0 : g0 + chunk].float()
                ca = torch.einsum("kt,gts->gks", cj.float(), a)
                va = rows[g0 : g0 + chunk, :, c0:c1].float() @ a
                scores = (ca * ca).sum(-1).unsqueeze(1) - 2 * va @ ca.transpose(1, 2)  # [chunk, P, k]
                val, idx = smallest(scores.view(-1, scores.shape[-1]), n)
                val = (val + (va * va).sum(-1).reshape(-1, 1)).clamp_min_(0)
                cand[g0 : g0 + chunk, :, j] = idx.view(-1, per_group, n)
                dist[g0 : g0 + chunk, :, j] = val.view(-1, per_group, n)
        if c1 < row:  # the rest of each row absorbs the error of its nearest codeword here
            err = rows[:, :, c0:c1] - cj[cand[:, :, j, 0]]
            rows[:, :, c1:] -= (err @ metric) @ u[:, c0:c1, c1:]
    return cand.reshape(-1, n).numpy(), dist.reshape(-1, n).numpy()

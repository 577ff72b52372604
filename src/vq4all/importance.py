"""How much each input position of a layer matters: the mean square of its inputs on calibration data.

A layer computes y = W x, so rounding the weight row w to w_q changes an output by
(w - w_q) . x, whose mean square over inputs is (w - w_q)^T E[x x^T] (w - w_q). Keeping only
the diagonal h = E[x^2] (one value per position of the row), the error a sub-vector's codeword
adds is sum_e h_e (w_e - s c_e)^2: a weight that multiplies a large input costs more to get
wrong. `vq4all.search.candidates` ranks a sub-vector's candidate codewords by that weighted
distance (CompressConfig.search = "activations"). Transformers make it matter: in MiniLM a few
hidden dimensions carry inputs 100-200x the median mean square, and weighting the nearest
codeword by h raised the embedding cosine of the hard-assigned encoder from 0.660 to 0.794.

Positions are those of the artifact's weight rows (`vq4all.subvectors.split`):
- Linear [out, in]: h [in], the mean of x^2 over every leading dimension of the input;
- Conv1d/Conv2d/Conv3d with groups = 1, weight [out, in, *kernel]: h [in * prod(kernel)], the
  mean of x_c^2 over the batch and every spatial position for channel c, repeated over the
  kernel's positions (rows are channel-major);
- anything else (embeddings, grouped or depthwise convolutions, whose rows see different inputs,
  recurrent weights, custom modules): no statistic, the plain distance.
"""

from __future__ import annotations

import numpy as np
import torch

from .assign import weight_owner
from .errors import VQ4AllError
from .network import forward_batches

CONVS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


def weighs(module) -> bool:
    """Whether `module` gets a per-position input statistic (Linear, or a convolution with
    groups = 1)."""
    if isinstance(module, torch.nn.Linear):
        return True
    return isinstance(module, CONVS) and module.groups == 1


def input_mean_squares(net, keys, inputs, batch_size: int, *, progress: bool = False) -> dict:
    """{key: h [row] float32, or None} for the compressible weights `keys` of zoo/user network
    `net`: the mean square of each row position's input over `inputs` (what
    `net.calibration(...)` returns), run through the teacher `net.model` in batches of
    batch_size. A weight whose owner is not a Linear or an ungrouped convolution (`weighs`), or
    that is not its owner's `weight`, gets None."""
    model = net.model
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []

    def hook(key, module):
        def record(_module, args):
            x = args[0].detach()
            if isinstance(module, torch.nn.Linear):
                x = x.reshape(-1, x.shape[-1]).double()
                total, count = (x * x).sum(0), x.shape[0]
            else:  # [N, C, *spatial] (or unbatched [C, *spatial]): per channel over the rest
                if x.dim() == len(module.kernel_size) + 1:
                    x = x.unsqueeze(0)
                x = x.transpose(0, 1).reshape(x.shape[1], -1).double()
                total, count = (x * x).sum(1), x.shape[1]
            sums[key] = sums[key] + total if key in sums else total
            counts[key] = counts.get(key, 0) + count

        return record

    for key in keys:
        module, attr = weight_owner(model, key)
        if module is not None and attr == "weight" and weighs(module):
            hooks.append(module.register_forward_pre_hook(hook(key, module)))
    try:
        forward_batches(net, inputs, batch_size, "input statistics" if progress else None)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for key in keys:
        if key not in sums:
            out[key] = None
            continue
        module, _ = weight_owner(model, key)
        h = (sums[key] / max(counts[key], 1)).cpu().numpy()
        if isinstance(module, CONVS):
            h = np.repeat(h, int(np.prod(module.kernel_size)))
        out[key] = h.astype(np.float32)
    return out


def search_statistics(
    search: str,
    net,
    keys,
    inputs,
    batch_size: int,
    *,
    codebook=None,
    granularity: str = "channel",
    progress: bool = False,
) -> dict | None:
    """What the candidate search `search` (rules.SEARCHES) follows for the weights `keys`:
    None for "plain", else {key: statistic or None} gathered on `inputs` through the teacher:
    h [row] for "activations" (`input_mean_squares`), H [groups, row, row] for "hessian"
    (`vq4all.hessian.input_moments`) and for "sequential" (`vq4all.hessian.sequential_moments`,
    block after block on a copy of the network coded on `codebook` with `granularity` scales)."""
    if search == "plain":
        return None
    if search == "activations":
        return input_mean_squares(net, keys, inputs, batch_size, progress=progress)
    from .hessian import input_moments, sequential_moments

    if search == "sequential":
        if codebook is None:
            raise VQ4AllError("the sequential search codes the network block by block: it needs the codebook")
        return sequential_moments(net, keys, inputs, batch_size, codebook, granularity, progress=progress)
    return input_moments(net, keys, inputs, batch_size, progress=progress)

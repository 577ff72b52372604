"""Real input vectors of real layers, for running a layer of a zoo network on the engine.

The engine computes one GEMV: y[o] = sum_i x[i] * weight_row_o[i], with x as long as a weight
row. For a Linear layer x is the layer's input; for a Conv1d/Conv2d (groups = 1) it is one
receptive-field patch of the layer's input, flattened in the weight's (in_channels, kernel...)
order (torch's unfold), taken at the output position whose patch has the largest L2 norm (the
middle of an image or a frame can be all background zeros). The input comes from the network's
own calibration data (first sample), captured by a forward hook: a real activation, not a
synthetic one. Layers whose rows do not see one shared input vector (grouped convolutions,
recurrent and embedding weights) have no such vector here: `real_input` raises VQ4AllError.

torch is needed (the network runs); the engine side (rtl/, sim/) stays torch-free.
"""

from __future__ import annotations

import numpy as np

from vq4all.errors import VQ4AllError


def real_input(net, param: str, seed: int = 0) -> np.ndarray:
    """x: [row] float32, the real input vector of weight `param` (a state-dict key) of zoo
    network `net` (a ZooNetwork) on its first calibration sample."""
    import torch
    import torch.nn.functional as F

    module_name, _, attr = param.rpartition(".")
    modules = dict(net.model.named_modules())
    module = modules.get(module_name)
    if module is None:
        raise VQ4AllError(f"{net.name}: no module owns weight '{param}'")
    if attr != "weight" or not isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
        raise VQ4AllError(
            f"{net.name}: layer '{module_name}' is a {type(module).__name__}; real inputs are "
            "captured for Linear and Conv1d/Conv2d layers only"
        )
    if getattr(module, "groups", 1) != 1:
        raise VQ4AllError(
            f"{net.name}: layer '{module_name}' is a grouped convolution (groups={module.groups}): "
            "its rows do not share one input vector"
        )
    captured = []
    handle = module.register_forward_pre_hook(lambda mod, args: captured.append(args[0].detach()))
    try:
        with torch.no_grad():
            net.forward(net.model, net.calibration(1, seed))
    finally:
        handle.remove()
    if not captured:
        raise VQ4AllError(f"{net.name}: layer '{module_name}' was not reached by the forward pass")
    x = captured[0].float()
    if isinstance(module, torch.nn.Linear):
        vec = x.reshape(-1, x.shape[-1])[0]
    else:
        if isinstance(module, torch.nn.Conv1d):  # [N, C, T] -> [N, C, T, 1] and 2-D unfold
            x = x.unsqueeze(-1)
            kernel, dilation, padding, stride = (
                (module.kernel_size[0], 1),
                (module.dilation[0], 1),
                (module.padding[0], 0),
                (module.stride[0], 1),
            )
        else:
            kernel, dilation, padding, stride = module.kernel_size, module.dilation, module.padding, module.stride
        if isinstance(padding, str):
            raise VQ4AllError(f"{net.name}: layer '{module_name}' uses padding='{padding}': not supported here")
        cols = F.unfold(x[:1], kernel, dilation=dilation, padding=padding, stride=stride)  # [1, C*kh*kw, P]
        vec = cols[0, :, int(torch.argmax(cols[0].norm(dim=0)))]
    vec = vec.cpu().numpy().astype(np.float32)
    row = int(np.prod(module.weight.shape[1:]))
    if vec.size != row:
        raise VQ4AllError(f"{net.name}: captured {vec.size} inputs for '{module_name}', its rows have {row}")
    return vec


def real_layer_job(net, param: str, codebook, seed: int = 0, requant: bool = False):
    """A real layer ready for the engine: weight `param` of `net` (a vq4all.network.Network with
    calibration data, e.g. zoo.load(name)) hard-assigned
    to `codebook` (an int8 artifact.Codebook; channel scales), with its real input vector
    quantised to int8 (sim.streams.quantize_int8). With requant, also the multipliers and shift
    of the engine's output stage from the layer's real scales (row scale x codebook scale x
    activation scale, output scale = largest |output| / 127; sim.layer.requant_for).
    Returns a sim.streams.Job named "network.layer"."""
    from vq4all.hard import assign
    from vq4all.hw.sim.layer import requant_for
    from vq4all.hw.sim.streams import Job, quantize_int8

    weights = net.compressible()
    if param not in weights:
        raise VQ4AllError(f"{net.name} has no compressible weight '{param}': choose one of {', '.join(weights)}")
    (layer,) = assign({param: weights[param].numpy()}, codebook)
    x, x_scale = quantize_int8(real_input(net, param, seed))
    job = Job(f"{net.name}.{layer.name}", x, layer.codes)
    if requant:
        factors = layer.scales.astype(np.float64) * codebook.scale * x_scale
        job.multipliers, job.shift = requant_for(x, layer.codes, codebook, factors)
    return job

"""Real input vectors of real layers: the captured vector times the weight rows is the layer's own
output (before its bias) at one position, so the engine computes a real piece of the network."""

import numpy as np
import pytest
import torch

from vq4all import zoo
from vq4all.errors import VQ4AllError
from vq4all.hw.layer_inputs import real_input


@pytest.mark.parametrize(
    "network,module_name",
    [
        ("digits_cnn", "conv1"),
        ("digits_cnn", "conv2"),
        ("digits_cnn", "fc1"),
        ("crepe_tiny", "conv2"),
        ("crepe_tiny", "classifier"),
    ],
)
def test_input_times_weight_is_the_layer_output(network, module_name):
    net = zoo.load(network)
    module = dict(net.model.named_modules())[module_name]
    x = real_input(net, f"{module_name}.weight")
    outputs = []
    handle = module.register_forward_hook(lambda mod, args, out: outputs.append(out.detach()))
    try:
        with torch.no_grad():
            net.forward(net.model, net.calibration(1, 0))
    finally:
        handle.remove()
    out = outputs[0][0]
    bias = module.bias.detach() if module.bias is not None else torch.zeros(out.shape[0])
    rows = module.weight.detach().reshape(module.weight.shape[0], -1).numpy().astype(np.float64)
    got = rows @ x.astype(np.float64)
    if out.ndim == 1:  # Linear: [out_features]
        want = (out - bias).numpy()
    else:  # Conv2d: [C, H, W]: the output at one position of the map (the most active patch)
        flat = (out.reshape(out.shape[0], -1) - bias[:, None]).numpy()
        want = flat[:, np.argmin(np.abs(flat - got[:, None]).max(axis=0))]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(got).max()))
    assert np.abs(x).max() > 0 and np.abs(got).max() > 0


def test_layers_without_one_input_vector_are_refused():
    net = zoo.load("silero_vad")
    keys = [
        k
        for k in net.compressible_keys()
        if not isinstance(
            dict(net.model.named_modules()).get(k.rsplit(".", 1)[0]),
            (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d),
        )
    ]
    assert keys, "silero_vad has recurrent weights"
    with pytest.raises(VQ4AllError, match="Linear and Conv"):
        real_input(net, keys[0])

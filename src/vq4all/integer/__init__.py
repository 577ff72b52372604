"""Integer inference of a compressed network: int8 activations, integer dot products on codes.

What runs where (numpy only at inference; torch reads the model's structure once in `build`):
- every Conv2d/Linear: int8 input patches (im2col on the host) x int8 codewords, exact int32
  accumulators (`reference.lookup_matmul_int`), then either the engine's requantisation stage
  (`reference.requantize`, int8 out; layers feeding another compressed layer) or a float64
  dequantisation on the host (int32 out; the network's output layers);
- on the host in float64: bias, batch norm, ReLU/PReLU, max pooling, padding, permutes,
  sigmoid, softmax.
Fixed-point formats: `vq4all.integer.layers`. The networks: `vq4all.integer.networks`.
The same model on the simulated engine: `vq4all.hw.host`.
"""

from .layers import CompressedLayer, FloatBackend, IntegerBackend, reference_outputs
from .model import IntegerModel, build, compare
from .networks import RECIPES
from .tasks import Task, eval_task, subset

__all__ = [
    "RECIPES",
    "CompressedLayer",
    "FloatBackend",
    "IntegerBackend",
    "IntegerModel",
    "Task",
    "build",
    "compare",
    "eval_task",
    "reference_outputs",
    "subset",
]

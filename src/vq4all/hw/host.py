"""The host driver: a compressed network's integer model with every compressed layer run on the
simulated engine, checked bit for bit against the integer model layer by layer.

    report = run_network(zoo.load("digits_cnn"), art, codebook, limit=20, simulator="verilator")

What runs where: the host (numpy) does everything `vq4all.integer` does outside the dot products
(im2col, int8 quantisation of activations, bias, batch norm, activations, pooling, softmax), then
hands each compressed layer to the engine as GEMVs: one per input vector of a Linear, one per
output position of a Conv2d, all of a layer's GEMVs over all inputs back to back in as few
simulator runs as `cycles_per_run` allows (the next layer needs this layer's outputs, so a
layer is the natural unit). Layers whose output feeds another compressed layer run on a
requantising engine (EngineConfig(requant=True): int8 results from the layer's multipliers and
shift); the network's output layers on a plain one (int32 accumulators, dequantised on the
host). The engine's results, not the reference's, flow into the next layer and into the task
metric; each layer's results are compared with `integer.reference_outputs` (lookup_matmul_int,
then requantize) on the same int8 inputs and every differing value is counted.

The simulator runs `hw.host_tb` (cocotb) on `sim.runner`'s cached builds (build_engine, run_testbench).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vq4all.artifact import Codebook, NetworkArtifact
from vq4all.errors import VQ4AllError, printable
from vq4all.hw.rtl.config import EngineConfig
from vq4all.hw.sim.packing import pack_tail
from vq4all.hw.sim.runner import SIMULATORS, build_engine, cache_root, check_rom_file, run_testbench
from vq4all.hw.sim.streams import beats_per_row
from vq4all.integer.layers import CompressedLayer, IntegerBackend, reference_outputs

TESTBENCH = "vq4all.hw.host_tb"
# engine cycles per simulator run: a run took 10 to 46 s in Verilator (benches/results/run_hw), so
# the progress bar moves often, while each run's start-up (about 1 s) stays small
DEFAULT_CYCLES_PER_RUN = 200_000


def engine_configs(
    codebook: Codebook, *, lanes: int = 1, max_m: int = 2048, max_rows: int = 65535, pack: bool = False
) -> dict:
    """The two engines a network runs on: {"requant": with the output stage, "int32": without},
    both of the codebook's k and d, row-packing with `pack` (one-line VQ4AllError for impossible
    parameters)."""
    common = {"k": codebook.k, "d": codebook.d, "lanes": lanes, "max_m": max_m, "max_rows": max_rows, "pack": pack}
    return {"requant": EngineConfig(**common, requant=True), "int32": EngineConfig(**common)}


def check_fits(art: NetworkArtifact, config: EngineConfig) -> None:
    """One-line VQ4AllError naming the first artifact layer the engine cannot hold (its m or rows
    beyond the engine's max_m / max_rows, on a packing engine rows shorter than d:
    `EngineConfig.descriptor_problem`)."""
    for layer in art.layers:
        rows, m = layer.codes.shape
        tail = pack_tail(layer.row, config.d) if layer.row else 0
        problem = config.descriptor_problem(m, rows, 1, tail) if m and rows else f"m={m}, rows={rows}: an empty layer"
        if problem:
            fix = f" (--max-m {1 << (m - 1).bit_length()} would)" if m > config.max_m else ""
            raise VQ4AllError(
                f"layer '{printable(layer.name, 200)}' of the artifact does not fit the engine: {problem}{fix}"
            )


def _simulate_layer(
    config: EngineConfig,
    codebook: Codebook,
    layer: CompressedLayer,
    cols: np.ndarray,
    *,
    simulator: str,
    rom_file: Path | None,
    cache: Path,
) -> tuple[np.ndarray, dict]:
    """One simulator run of `layer` on the GEMVs cols [M, in_features] int8: (results [M, rows]
    int64 as the engine returned them, the driver's report + build_seconds, run_seconds)."""
    build = build_engine(
        config, codebook, simulator=simulator, readmemh=rom_file is not None, rom_file=rom_file, cache=cache
    )
    arrays = {"name": np.array(layer.name), "codes": layer.codes, "x": cols}
    if config.requant:
        arrays["mult"], arrays["shift"] = layer.multipliers, np.array(layer.shift)
    report, results, run_seconds = run_testbench(
        build, TESTBENCH, arrays, {}, what=f"simulation of layer {printable(layer.name, 200)}", results=True
    )
    build_seconds = build.seconds
    if results.size != cols.shape[0] * layer.rows:
        raise VQ4AllError(
            f"layer {layer.name}: the engine returned {results.size} of {cols.shape[0] * layer.rows} results"
        )
    report.update(build_seconds=build_seconds, run_seconds=run_seconds)
    return results.reshape(cols.shape[0], layer.rows), report


@dataclass
class LayerStats:
    """What one compressed layer cost on the engine, summed over its simulator runs."""

    name: str
    kind: str
    output: str
    rows: int
    in_features: int
    m: int
    gemvs: int = 0
    outputs: int = 0
    mismatches: int = 0
    cycles: int = 0
    ideal_cycles: int = 0
    runs: int = 0
    build_seconds: float = 0.0
    run_seconds: float = 0.0

    def to_dict(self, d: int, lanes: int, inputs: int) -> dict:
        """With gemvs_per_input, cycles_per_input and mac_utilization = useful MACs
        (gemvs * rows * in_features) / (d * lanes * cycles)."""
        macs = self.gemvs * self.rows * self.in_features
        return {
            **self.__dict__,
            "gemvs_per_input": self.gemvs / max(inputs, 1),
            "cycles_per_input": self.cycles / max(inputs, 1),
            "mac_utilization": macs / (d * lanes * self.cycles) if self.cycles else 0.0,
            "build_seconds": round(self.build_seconds, 3),
            "run_seconds": round(self.run_seconds, 3),
        }


@dataclass
class EngineBackend(IntegerBackend):
    """The compressed layers' GEMVs on the simulated engine; outputs are the engine's.

    configs: engine_configs(...); simulator: icarus or verilator; rom_file: the $readmemh engine's
    ROM file (None: the ROM inline in the Verilog); cycles_per_run: most engine cycles (estimated
    at full speed: rows x ceil(m / lanes) per GEMV) per simulator run. stats: {layer: LayerStats}."""

    codebook: Codebook | None = None
    configs: dict = field(default_factory=dict)
    simulator: str = "icarus"
    rom_file: Path | None = None
    cycles_per_run: int = DEFAULT_CYCLES_PER_RUN
    progress: bool = True
    cache: Path | None = None
    stats: dict = field(default_factory=dict)

    def gemv(self, layer: CompressedLayer, cols: np.ndarray) -> np.ndarray:
        config = self.configs[layer.output]
        want = reference_outputs(layer, cols, config.acc_bits)  # the integer model on these inputs
        stats = self.stats.setdefault(
            layer.name,
            LayerStats(
                layer.name,
                "conv" if layer.conv is not None else "linear",
                layer.output,
                layer.rows,
                layer.in_features,
                int(layer.codes.shape[1]),
            ),
        )
        per_gemv = layer.rows * beats_per_row(int(layer.codes.shape[1]), config.lanes)
        step = max(1, self.cycles_per_run // per_gemv)
        got = np.empty(want.shape, dtype=np.int64)
        starts = range(0, len(cols), step)
        bar = tqdm(
            starts,
            desc=f"{layer.name} on {self.simulator}",
            unit="run",
            disable=not self.progress,
            leave=False,
        )
        for i in bar:
            results, report = _simulate_layer(
                config,
                self.codebook,
                layer,
                cols[i : i + step],
                simulator=self.simulator,
                rom_file=self.rom_file,
                cache=self.cache or cache_root(),
            )
            got[i : i + step] = results
            stats.runs += 1
            stats.cycles += sum(e["cycles"] for e in report["layers"])
            stats.ideal_cycles += sum(e["ideal_cycles"] for e in report["layers"])
            stats.build_seconds += report["build_seconds"]
            stats.run_seconds += report["run_seconds"]
            bar.set_postfix(cycles=stats.cycles)
        stats.gemvs += len(cols)
        stats.outputs += got.size
        stats.mismatches += int((got != want).sum())
        return got.astype(want.dtype)


def prepare(
    net,
    art: NetworkArtifact,
    codebook: Codebook,
    *,
    lanes: int = 1,
    max_m: int = 2048,
    simulator: str = "icarus",
    rom_file=None,
    pack: bool = False,
) -> tuple[dict, Path | None]:
    """Every check that needs no simulation, in order: the simulator's name, the network has a
    recipe, the artifact is of `net` on this int8 codebook, every layer fits the engine, the
    ROM file (when given) exists and holds this codebook. Returns (engine configs, the ROM
    file's absolute path or None)."""
    from vq4all.integer.model import check_artifact
    from vq4all.integer.networks import recipe

    if simulator not in SIMULATORS:
        raise VQ4AllError(f"unknown simulator '{printable(simulator, 40)}': choose one of {', '.join(SIMULATORS)}")
    recipe(net.name)
    check_artifact(net, art, codebook)
    configs = engine_configs(codebook, lanes=lanes, max_m=max_m, pack=pack)
    check_fits(art, configs["int32"])
    if rom_file is not None:
        rom_file = check_rom_file(rom_file, configs["int32"], codebook)
    return configs, rom_file


def run_network(
    net,
    art: NetworkArtifact,
    codebook: Codebook,
    *,
    limit: int | None = None,
    lanes: int = 1,
    max_m: int = 2048,
    simulator: str = "icarus",
    rom_file=None,
    cycles_per_run: int = DEFAULT_CYCLES_PER_RUN,
    calibration: int | None = None,
    progress: bool = True,
    cache: Path | None = None,
    task=None,
    pack: bool = False,
) -> dict:
    """Run zoo network `net` (digits_cnn, crepe_tiny, mtcnn_onet) from artifact `art` on the
    simulated engine for its evaluation set (`task`: an integer.Task, default
    integer.eval_task(net)) or `limit` inputs evenly spaced over it; `pack`: on the row-packing
    engine (EngineConfig.pack, lanes 1 or 2).

    Returns {"network", "metric", "higher_is_better", "inputs", "eval_size", "index", "fp",
    "float", "integer", "engine" (the metric of each on those inputs), "integer_vs_float",
    "engine_vs_integer" (the task's agreement measure), "engine_equals_integer" (network outputs
    identical), "mismatches" (engine results differing from the integer model's on the same
    int8 inputs, all layers), "outputs" (engine results), "cycles", "layers" (per layer
    LayerStats.to_dict and IntegerModel.describe), "simulator", "lanes", "pack", "rom", "engines" (the two EngineConfigs), "codebook_sha256",
    "k", "d", "calibration", "seconds"}."""
    from vq4all.integer.model import DEFAULT_CALIBRATION, build, compare
    from vq4all.integer.tasks import eval_task

    configs, rom_file = prepare(
        net, art, codebook, lanes=lanes, max_m=max_m, simulator=simulator, rom_file=rom_file, pack=pack
    )
    task = eval_task(net) if task is None else task
    start = time.perf_counter()
    model = build(net, art, codebook, calibration=calibration or DEFAULT_CALIBRATION)
    for layer in model.layers():  # the engine's own descriptor rule, before any simulation
        if layer.output == "requant":
            tail = pack_tail(layer.in_features, codebook.d)
            problem = configs["requant"].descriptor_problem(layer.codes.shape[1], layer.rows, layer.shift, tail)
            if problem:
                raise VQ4AllError(f"layer {printable(layer.name, 200)}: {problem}")
    host = compare(net, model, limit, progress=progress, task=task)
    x = task.inputs[host["index"]]
    backend = EngineBackend(
        codebook=codebook,
        configs=configs,
        simulator=simulator,
        rom_file=rom_file,
        cycles_per_run=cycles_per_run,
        progress=progress,
        cache=cache,
    )
    sim_start = time.perf_counter()
    engine_out = model.forward(x, backend, batch=len(x))
    sim_seconds = time.perf_counter() - sim_start
    inputs = len(x)
    layers = [  # the engine's costs and the layer's fixed-point parameters (x_scale, y_scale, shift)
        {**backend.stats[layer.name].to_dict(codebook.d, lanes, inputs), **described}
        for layer, described in zip(model.layers(), model.describe())
    ]
    return {
        "network": net.name,
        "metric": host["metric"],
        "higher_is_better": host["higher_is_better"],
        "inputs": inputs,
        "eval_size": int(len(task.inputs)),
        "index": host["index"].tolist(),
        "fp": host["fp"],
        "float": host["float"],
        "integer": host["integer"],
        "engine": task.score(engine_out, host["index"]),
        "integer_vs_float": host["integer_vs_float"],
        "engine_vs_integer": task.agreement(engine_out, host["outputs"]["integer"]),
        "engine_equals_integer": bool(np.array_equal(engine_out, host["outputs"]["integer"])),
        "mismatches": sum(entry["mismatches"] for entry in layers),
        "outputs": sum(entry["outputs"] for entry in layers),
        "cycles": sum(entry["cycles"] for entry in layers),
        "layers": layers,
        "simulator": simulator,
        "lanes": lanes,
        "pack": pack,
        "rom": "readmemh" if rom_file is not None else "inline",
        "engines": {key: config.to_dict() for key, config in configs.items()},
        "codebook_sha256": codebook.sha256,
        "k": codebook.k,
        "d": codebook.d,
        "calibration": model.calibration,
        "seconds": {
            "total": round(time.perf_counter() - start, 3),
            "simulation": round(sim_seconds, 3),
            "per_input": round(sim_seconds / max(inputs, 1), 3),
            **{f"host_{key}": value for key, value in host["seconds"].items()},
        },
    }

"""The engine's environment, cycle by cycle: packs layers into stream beats, applies random
valid/ready backpressure, collects results and checks them against the reference.

One model serves both simulators: Amaranth's (unit tests) and cocotb's (`tb_engine.py` on Icarus
or Verilator). Each cycle the caller
  1. drives `inputs()` onto the ports (valid/payload of layer, acts, codes; ready of results),
  2. lets the logic settle and passes the ports' ready/valid/payload and the status outputs
     (`error`, `rejected`) to `observe(...)`,
  3. lets the clock rise (every transfer seen in step 2 happens on that edge).
Besides layers (`Job`), a run may send bare descriptors (`Descriptor`): empty layers and
descriptors the engine must reject; the model checks the engine's status outputs every cycle
(cycle-exact: a rejection shows on the cycle after its descriptor's transfer) and that the
layers after a rejected descriptor still compute bit for bit.
Stream rules kept here: a beat once presented (valid high) stays presented, unchanged, until
taken; whether a beat is presented, or a result accepted, is drawn per cycle with probability
1 - backpressure from a seeded generator, so a run is reproducible.

numpy only (runs inside the simulator's Python; the engine's EngineConfig comes from
rtl/config.py, which needs neither Amaranth nor torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vq4all.artifact import Codebook
from vq4all.hw.rtl.config import REJECTED_BITS, SHIFT_BITS, EngineConfig
from vq4all.reference import lookup_matmul_int, requantize

from .packing import pack_codes_flat, pack_scales, pack_schedule, pack_tail, pack_words, unpack_results


def beats_per_row(m: int, lanes: int) -> int:
    return -(-m // lanes)


def pack_acts(x: np.ndarray, m: int, d: int, lanes: int) -> list[int]:
    """x: [in_features] int8 -> ceil(m/lanes) beat words of lanes*d int8 values (value i of a beat
    in bits [8i, 8i+8)), zero-padded past in_features."""
    flat = np.zeros(beats_per_row(m, lanes) * lanes * d, dtype=np.int64)
    flat[: x.size] = np.asarray(x, dtype=np.int64)
    return pack_words((flat & 0xFF).tolist(), lanes * d, 8)


def pack_codes(codes: np.ndarray, lanes: int, code_bits: int) -> list[int]:
    """codes: [rows, m] -> rows * ceil(m/lanes) beat words, lane l of beat b of row o =
    codes[o, b*lanes + l] in bits [l*code_bits, (l+1)*code_bits); idle lanes are 0."""
    return [word for row in np.asarray(codes, dtype=np.int64).tolist() for word in pack_words(row, lanes, code_bits)]


@dataclass
class Job:
    """One layer to run: x [in_features] int8, codes [rows, m] unsigned (< k); for a requant
    engine also multipliers [rows] unsigned and the layer's shift (reference.requantize)."""

    name: str
    x: np.ndarray
    codes: np.ndarray
    multipliers: np.ndarray | None = None
    shift: int = 0


@dataclass
class Descriptor:
    """A bare layer descriptor, sent on `layer` with nothing on the other streams: an empty layer
    (m = 0 or rows = 0) or one the engine must reject (`EngineConfig.descriptor_problem`, e.g.
    m > max_m). m, rows, shift: the raw field values, each within its field (m_bits, rows_bits,
    SHIFT_BITS bits), deliberately not held to the layer limits that check_job enforces."""

    name: str
    m: int
    rows: int
    shift: int = 0
    tail: int = 0


def descriptor_word(config: EngineConfig, m: int, rows: int, shift: int = 0, tail: int = 0) -> int:
    """The `layer` payload m | rows << m_bits (| tail << ... with pack) (| shift << ... with
    requant), the fields in that order from the least significant bit; ValueError if a value does
    not fit its field."""
    fields = [("m", m, config.m_bits), ("rows", rows, config.rows_bits)]
    if config.pack:
        fields.append(("tail", tail, config.tail_bits))
    if config.requant:
        fields.append(("shift", shift, SHIFT_BITS))
    word, at = 0, 0
    for name, value, bits in fields:
        if not 0 <= int(value) < 1 << bits:
            raise ValueError(f"descriptor {name}={value} does not fit its {bits}-bit field")
        word |= int(value) << at
        at += bits
    return word


def check_job(config: EngineConfig, job: Job) -> None:
    """Raise ValueError for a layer this engine cannot run (before any simulation)."""
    rows, m = job.codes.shape
    if not 1 <= m <= config.max_m:
        raise ValueError(f"layer {job.name}: m={m} sub-vectors per row, the engine holds 1..{config.max_m} (max_m)")
    if not 1 <= rows <= config.max_rows:
        raise ValueError(f"layer {job.name}: {rows} rows, the engine counts 1..{config.max_rows} (max_rows)")
    if job.codes.size and int(job.codes.max()) >= config.k:
        raise ValueError(f"layer {job.name}: code {int(job.codes.max())} >= k={config.k}")
    if not (m - 1) * config.d < job.x.size <= m * config.d:
        raise ValueError(f"layer {job.name}: {job.x.size} activations do not match m={m} sub-vectors of d={config.d}")
    if config.pack and job.x.size < config.d:
        raise ValueError(
            f"layer {job.name}: rows of {job.x.size} values; a packing engine needs rows of at least d={config.d}"
        )
    if config.requant and (
        job.multipliers is None or np.asarray(job.multipliers).shape != (rows,) or not 1 <= int(job.shift) <= 62
    ):
        raise ValueError(f"layer {job.name}: a requant engine needs {rows} multipliers and a shift in 1..62")


class StreamDriver:
    """Drives a list of layers through the engine back to back and checks every result.

    config: the engine's EngineConfig; jobs: layers (`Job`) and bare descriptors (`Descriptor`)
    in stream order; codebook: the int8 artifact.Codebook [k, d] the ROM holds (checked against
    config; the reference computes on its `.codebook`). backpressure: probability, per cycle and
    per stream, that a beat is withheld / a result refused (0 = full speed).
    self.jobs: the layers alone (the ones with results), in order.
    """

    def __init__(
        self, config: EngineConfig, jobs: list[Job], codebook: Codebook, *, backpressure: float = 0.0, seed: int = 0
    ):
        if not 0.0 <= backpressure < 1.0:
            raise ValueError(f"backpressure={backpressure} must be in [0, 1)")
        config.check_codebook(codebook)
        self.config, self.p = config, float(backpressure)
        self.jobs = [job for job in jobs if isinstance(job, Job)]
        self.rng = np.random.default_rng(seed)
        self.streams = config.streams
        self.queues: dict[str, list[int]] = {s: [] for s in self.streams}
        self.expected: list[np.ndarray] = []
        # per descriptor on `layer`, in order: its Job's index (None for a bare one), and why the
        # engine must reject it (None: taken as a layer or ignored as an empty one)
        self._layer_of: list[int | None] = []
        self._problem: list[str | None] = []
        self.bare: list[dict] = []  # the bare descriptors, for the report
        for job in jobs:
            if isinstance(job, Descriptor):
                word = descriptor_word(config, job.m, job.rows, job.shift, job.tail)
                problem = config.descriptor_problem(job.m, job.rows, job.shift, job.tail)
                if problem is None and job.m and job.rows:  # the engine would wait for its activations
                    raise ValueError(f"descriptor {job.name}: a valid non-empty layer, send it as a Job")
                self.queues["layer"].append(word)
                self._layer_of.append(None)
                self._problem.append(problem)
                self.bare.append({"name": job.name, "descriptor": word, "rejected": problem is not None})
                continue
            if not isinstance(job, Job):
                raise ValueError(f"StreamDriver takes Job and Descriptor items, got {type(job).__name__}")
            check_job(config, job)
            rows, m = job.codes.shape
            acc = lookup_matmul_int(job.x[None, :].astype(np.int8), job.codes, codebook.codebook, config.acc_bits)
            tail = pack_tail(job.x.size, config.d) if config.pack else 0
            descriptor = descriptor_word(config, m, rows, int(job.shift), tail)
            if config.requant:
                self.queues["scales"] += pack_scales(job.multipliers, config.scales_per_beat, config.mult_bits)
                acc = requantize(acc, np.asarray(job.multipliers), int(job.shift), config.out_bits)
            self._layer_of.append(len(self.expected))
            self._problem.append(None)
            self.queues["layer"].append(descriptor)
            self.queues["acts"] += pack_acts(job.x, m, config.d, config.lanes)
            if config.pack:
                self.queues["codes"] += pack_codes_flat(job.codes, config.code_bits, config.codes_per_beat)
            else:
                self.queues["codes"] += pack_codes(job.codes, config.lanes, config.code_bits)
            self.expected.append(acc[0])
        self.sent = {s: 0 for s in self.streams}
        self.presented = {s: False for s in self.streams}
        self.results: list[int] = []
        self.cycle = 0
        self.started: list[int] = []  # cycle each descriptor (layer or bare) was taken
        self.finished: list[int] = []  # cycle each layer's last result was taken
        self._ready = False
        self._boundaries = np.cumsum([job.codes.shape[0] for job in self.jobs]).tolist()
        self.result_beats = 0  # `results` beats taken (a packing engine at lanes 2 may carry 2 per beat)
        self.bad_result_beats = 0  # beats whose count field is out of range (counted as mismatches)
        self.first_bad_result_beats: list[dict] = []
        self.rejected = 0  # rejected descriptors taken so far: what `rejected` shows a cycle later
        self.status_mismatches = 0  # cycles whose (error, rejected) differ from the model
        self.first_status_mismatches: list[dict] = []

    @property
    def total_results(self) -> int:
        return self._boundaries[-1] if self._boundaries else 0

    @property
    def done(self) -> bool:
        """Every result is in, every descriptor sent, and the status outputs were checked on the
        cycle after the last descriptor's transfer (a run may end with bare descriptors)."""
        return (
            len(self.results) == self.total_results
            and self.sent["layer"] == len(self.queues["layer"])
            and (not self.started or self.cycle >= self.started[-1] + 2)
        )

    def inputs(self) -> dict[str, int]:
        """The values to drive this cycle: {stream}_valid/{stream}_payload for layer, acts and
        codes, and results_ready."""
        out = {}
        for s in self.streams:
            queue, i = self.queues[s], self.sent[s]
            if not self.presented[s] and i < len(queue):
                self.presented[s] = self.p == 0.0 or self.rng.random() >= self.p
            out[f"{s}_valid"] = int(self.presented[s])
            out[f"{s}_payload"] = queue[i] if i < len(queue) else 0
        self._ready = self.p == 0.0 or self.rng.random() >= self.p
        out["results_ready"] = int(self._ready)
        return out

    def observe(
        self,
        *,
        layer_ready: int,
        acts_ready: int,
        codes_ready: int,
        results_valid: int,
        results_payload: int,
        error: int,
        rejected: int,
        scales_ready: int = 0,
    ) -> None:
        """The ports after settling, in the cycle `inputs()` was driven; then the clock rises.
        error, rejected: the engine's status outputs, which must show every rejected descriptor
        taken before this cycle (sticky error; count modulo 2^REJECTED_BITS)."""
        want = (int(self.rejected > 0), self.rejected % (1 << REJECTED_BITS))
        if (int(error), int(rejected)) != want:
            self.status_mismatches += 1
            if len(self.first_status_mismatches) < 5:
                self.first_status_mismatches.append(
                    {"cycle": self.cycle, "error": int(error), "rejected": int(rejected), "want": list(want)}
                )
        readies = {"layer": layer_ready, "acts": acts_ready, "codes": codes_ready, "scales": scales_ready}
        for s in self.streams:
            if self.presented[s] and readies[s]:
                if s == "layer":
                    self.rejected += self._problem[self.sent[s]] is not None
                    self.started.append(self.cycle)
                self.sent[s] += 1
                self.presented[s] = False
        if results_valid and self._ready:
            self.result_beats += 1
            try:
                values = unpack_results(results_payload, self.config.results_per_beat, self.config.result_bits)
            except ValueError as e:  # a bad count is the engine's fault: count it, keep going
                self.bad_result_beats += 1
                if len(self.first_bad_result_beats) < 5:
                    self.first_bad_result_beats.append({"cycle": self.cycle, "problem": str(e)})
                values = []
            for value in values:
                self.results.append(value)
                if len(self.results) in self._boundaries:
                    self.finished.append(self.cycle)
        self.cycle += 1

    def max_cycles(self) -> int:
        """A bound no correct run reaches: every beat and result at the slowest expected rate."""
        beats = sum(len(q) for q in self.queues.values()) + self.total_results
        slow = 1.0 / (1.0 - self.p) ** 2
        return int(50 * slow * (beats + 10 * len(self._layer_of) * (self.config.latency + 8))) + 1000

    def _schedule(self) -> tuple[list[int], list[int]]:
        """(taken, finish) at full speed, counted from the first descriptor's transfer (cycle 0):
        taken[j] the cycle descriptor j transfers, finish[i] the cycle layer i's last result is
        taken. The engine's schedule: the loader takes a descriptor once it is idle and the
        slot a layer would use is free (layers use the slots alternately); a bare descriptor
        (empty or rejected) only occupies that cycle; a layer then loads B_i = ceil(m_i / lanes)
        beats; the computer starts layer i the cycle after both its load and layer i-1's code
        beats are done, takes R_i * B_i code beats and frees the slot with the last; that beat's
        result is taken latency + 2 cycles later (MAC pipeline, then the SyncFIFOBuffered, whose
        written word is readable two cycles later). A packing engine has its own model
        (`packing.pack_schedule`)."""
        if self.config.pack:
            layers = []
            for index in self._layer_of:
                if index is None:
                    layers.append(None)
                else:
                    job = self.jobs[index]
                    layers.append((job.codes.shape[0], job.codes.shape[1], pack_tail(job.x.size, self.config.d)))
            return pack_schedule(self.config, layers)
        loader_free, slot_free, compute_end = 0, [0, 0], -1
        taken, finish = [], []
        for index in self._layer_of:
            slot = len(finish) % 2
            taken.append(max(loader_free, slot_free[slot]))
            if index is None:
                loader_free = taken[-1] + 1
                continue
            rows, m = self.jobs[index].codes.shape
            b = beats_per_row(m, self.config.lanes)
            load_end = taken[-1] + b
            loader_free = load_end + 1
            compute_end = max(load_end + 1, compute_end + 1) + rows * b - 1
            slot_free[slot] = compute_end + 1
            finish.append(compute_end + self.config.latency + 2)
        return taken, finish

    def ideal_finish(self) -> list[int]:
        """The cycle each layer's last result is taken at full speed (no backpressure), counted
        from the first descriptor's transfer (cycle 0), by the engine's schedule (`_schedule`)."""
        return self._schedule()[1]

    def report(self) -> dict:
        """Per layer: outputs, mismatches (vs lookup_matmul_int), cycles, mac_utilization =
        rows*in_features / (d*lanes*cycles), ideal_cycles (the same count at full speed).

        cycles is what the layer adds to the run: for the first layer, from its descriptor's
        transfer to its last result's (inclusive); for the others, from the previous layer's last
        result to theirs. (A layer's load overlaps the previous layer's compute, so its own
        descriptor-to-result span would count shared cycles twice.) The cycles sum to the run's.
        beats: {stream: beats transferred (valid and ready on one edge)}; result_beats likewise.
        descriptors: the bare descriptors (name, descriptor word, rejected); rejected: how many
        rejected descriptors were taken; status_mismatches: cycles whose error/rejected outputs
        differed from the model (first_status_mismatches: the first few)."""
        layers = []
        start = 0
        ideal_taken, ideal = self._schedule()
        first = self._layer_of.index(0) if self.jobs else 0  # the first layer's descriptor
        for i, job in enumerate(self.jobs):
            rows, m = job.codes.shape
            got = np.array(self.results[start : start + rows], dtype=np.int64)
            want = self.expected[i].astype(np.int64)
            start += rows
            mism = int((got != want[: got.size]).sum()) + (rows - got.size)
            entry = {
                "name": job.name,
                "rows": rows,
                "m": m,
                "in_features": int(job.x.size),
                "outputs": int(got.size),
                "mismatches": mism,
            }
            if i < len(self.finished):
                cycles = self.finished[i] - (self.started[first] - 1 if i == 0 else self.finished[i - 1])
                entry["cycles"] = cycles
                entry["mac_utilization"] = rows * int(job.x.size) / (self.config.d * self.config.lanes * cycles)
                entry["ideal_cycles"] = ideal[i] - (ideal_taken[first] - 1 if i == 0 else ideal[i - 1])
            if mism:
                bad = np.flatnonzero(got != want[: got.size])[:5].tolist()
                entry["first_mismatches"] = [{"row": r, "got": int(got[r]), "want": int(want[r])} for r in bad]
            layers.append(entry)
        return {
            "layers": layers,
            "outputs": sum(e["outputs"] for e in layers),
            "mismatches": sum(e["mismatches"] for e in layers) + self.bad_result_beats,
            "cycles": self.cycle,
            "backpressure": self.p,
            "beats": dict(self.sent),
            "result_beats": self.result_beats,
            "bad_result_beats": self.bad_result_beats,
            "first_bad_result_beats": self.first_bad_result_beats,
            "descriptors": self.bare,
            "rejected": self.rejected,
            "status_mismatches": self.status_mismatches,
            "first_status_mismatches": self.first_status_mismatches,
        }


def quantize_int8(x: np.ndarray) -> tuple[np.ndarray, float]:
    """A real input vector to the engine's int8 activations: (x_int8 [n] int8, scale float).

    Symmetric, one scale per vector: scale = max|x| / 127 (1.0 for an all-zero x),
    x_int8 = clip(round_half_even(x / scale), -127, 127), so x ~= x_int8 * scale. The engine is
    then checked against lookup_matmul_int on exactly these int8 values."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    peak = float(np.abs(x).max()) if x.size else 0.0
    scale = peak / 127.0 if peak > 0 else 1.0
    return np.clip(np.rint(x / scale), -127, 127).astype(np.int8), scale

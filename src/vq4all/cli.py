"""The `vq4all` console script: one plain function per subcommand, callable from tests.

Every flag defaults to None and falls back to the config dataclasses' defaults. A `VQ4AllError`
(bad input the user can fix) prints one line and exits with status 2; `--debug` shows the
traceback instead. Output into a pipe whose reader has gone (`... --json | head -1`) ends the
command quietly with status 141 (128 + SIGPIPE, as for tools the signal kills).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import rules
from .cliargs import ArgumentParser, bandwidth, float_in, int_in, power_of_two
from .config import CODEBOOK_INT_RANGES, COMPRESS_INT_RANGES, CodebookConfig, CompressConfig
from .errors import MAX_NAME_CHARS, VQ4AllError, printable
from .hw.rtl.config import ACT_BITS, MAX_LANES, EngineConfig

MAX_M = 1 << 20  # EngineConfig's bound on max_m (sub-vectors per row the activation buffer holds)
MAX_ERROR_CHARS = 1500  # an error line is cut here (escaped first): a hostile name never floods stderr


def _name(text) -> str:
    """A name from a file or a flag, safe in a one-line message: escaped and shortened."""
    return printable(text, MAX_NAME_CHARS)


def _emit(args, obj: dict, text: str) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True) if args.json else text)


# ----------------------------------------------------------------------------- zoo
def cmd_zoo_list(args) -> int:
    from . import zoo

    rows = zoo.list_networks()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<20}{'parameters':>14}{'compressible':>14}  metric")
    for r in rows:
        print(f"{r['name']:<20}{r['parameters']:>14,}{r['compressible_parameters']:>14,}  {r['metric']}")
    return 0


# ----------------------------------------------------------------------------- codebook
def cmd_codebook_build(args) -> int:
    from . import zoo
    from .artifact import save_codebook
    from .codebook import build
    from .config import CodebookConfig
    from .io import check_writable

    names = tuple(n.strip() for n in args.networks.split(",") if n.strip()) if args.networks else ()
    for name in names:
        if name not in zoo.NAMES:
            raise VQ4AllError(f"unknown network '{_name(name)}' in --networks: choose from {', '.join(zoo.NAMES)}")
    given = {
        "k": args.k,
        "d": args.d,
        "per_network": args.per_network,
        "bandwidth": args.bandwidth,
        "dtype": args.dtype,
        "lloyd_iters": args.lloyd_iters,
        "seed": args.seed,
        "scale_granularity": args.scale_granularity,
    }
    config = CodebookConfig(networks=names, **{k: v for k, v in given.items() if v is not None})
    check_writable(args.out)
    start = time.perf_counter()
    cb = build(config, {name: zoo.load(name) for name in names}, progress=not args.json)
    seconds = time.perf_counter() - start
    save_codebook(args.out, cb)
    info = {
        "file": args.out,
        "k": cb.k,
        "d": cb.d,
        "dtype": cb.dtype,
        "sha256": cb.sha256,
        "bandwidth_h": cb.manifest["bandwidth_h"],
        "pooled_subvectors": cb.manifest["pooled_subvectors"],
        "networks": list(names),
        "seconds": round(seconds, 3),
    }
    _emit(
        args,
        info,
        f"wrote {printable(args.out)}: k={cb.k} d={cb.d} {cb.dtype} from {len(names)} networks "
        f"(h={info['bandwidth_h']:.4f}, {seconds:.1f} s)  sha256={cb.sha256}",
    )
    return 0


# ----------------------------------------------------------------------------- assign
def _network(args, *, calibration: bool):
    """The network a command works on: a zoo network (--network NAME) or the user's own
    (--model package.module:factory, --weights FILE, --calibration FILE): a vq4all Network."""
    from . import zoo

    if (args.network is None) == (args.model is None):
        raise VQ4AllError(
            "give exactly one of --network NAME (a zoo network: `vq4all zoo list`) or "
            "--model package.module:factory (your own)"
        )
    if args.network is not None:
        for flag in ("weights", "calibration", "name", "loss"):
            if getattr(args, flag, None) is not None:
                raise VQ4AllError(f"--{flag} goes with --model: a zoo network brings its own")
        if args.network not in zoo.NAMES:
            raise VQ4AllError(f"unknown network '{_name(args.network)}': choose one of {', '.join(zoo.NAMES)}")
        return zoo.load(args.network)
    from .network import Network
    from .usermodel import load_calibration, load_model

    inputs = None if args.calibration is None else load_calibration(args.calibration)
    if calibration and inputs is None:
        raise VQ4AllError(
            "--model needs --calibration FILE (.safetensors or .npy): a batch of real inputs to the model"
        )
    model = load_model(args.model, args.weights)
    return Network(model, args.name, calibration=inputs, loss=getattr(args, "loss", None))


def cmd_assign(args) -> int:
    import warnings

    from . import api
    from .artifact import load_codebook, network_sizes
    from .io import check_not_input, check_writable

    check_writable(args.out)
    check_not_input(args.out, args.codebook, args.weights, args.calibration)
    cb = load_codebook(args.codebook)
    net = _network(args, calibration=args.search not in (None, "plain"))
    with warnings.catch_warnings():  # the left-FP warning: this command's own line says it
        warnings.simplefilter("ignore")
        art = api.hard_assign(
            net,
            cb,
            granularity=args.scale_granularity or "channel",
            search=args.search or "plain",
            progress=not args.json,
        )
    left_fp = art.config.get("left_fp", {})
    api.save(art, args.out)
    info = {"file": args.out, "network": net.name, "layers": len(art.layers), "left_fp": left_fp, **network_sizes(art)}
    _emit(
        args,
        info,
        f"wrote {printable(args.out)}: {_name(net.name)}, {len(art.layers)} layers, "
        f"{info['bits_per_weight']:.3f} bits/weight, compression {info['compression_ratio']:.2f}x"
        + _left_fp_text(left_fp),
    )
    return 0


def _left_fp_text(left_fp: dict) -> str:
    if not left_fp:
        return ""
    names = ", ".join(_name(name) for name in list(left_fp)[:5]) + (" ..." if len(left_fp) > 5 else "")
    return f"; left FP (rows shorter than d): {names}"


# ----------------------------------------------------------------------------- compress / eval
def _block_list(text: str | None) -> tuple[str, ...] | None:
    """--blocks a,b,c as a tuple of names (None when not given); empty names are an error."""
    if text is None:
        return None
    names = tuple(part.strip() for part in text.split(","))
    if not all(names):
        raise VQ4AllError(f"--blocks '{printable(text, 120)}' has an empty name: give module names separated by commas")
    return names


def cmd_compress(args) -> int:
    from pathlib import Path

    import torch

    from .artifact import load_codebook, network_sizes, save_network
    from .config import CompressConfig
    from .io import check_not_input, check_writable
    from .train import compress, init_distributed

    given = {
        "alpha": args.alpha,
        "n": args.n,
        "steps": args.steps,
        "seed": args.seed,
        "init": args.init,
        "search": args.search,
        "lr": args.lr,
        "reg": args.reg,
        "batch_size": args.batch_size,
        "calibration": args.calibration_count,
        "checkpoint_every": args.checkpoint_every,
        "feature_weight": args.feature_weight,
        "schedule": args.schedule,
        "finish": args.finish,
        "mode": args.mode,
        "block_steps": args.block_steps,
        "finetune_steps": args.finetune_steps,
        "blocks": _block_list(args.blocks),
    }
    config = CompressConfig(pnc=not args.no_pnc, **{k: v for k, v in given.items() if v is not None})
    distributed = init_distributed()
    rank = torch.distributed.get_rank() if distributed else 0
    check_writable(args.out)
    checkpoint = Path(args.checkpoint or f"{args.out}.ckpt")
    check_not_input(args.out, args.codebook, args.weights, args.calibration)
    try:
        check_not_input(checkpoint, args.out)
    except VQ4AllError:
        raise VQ4AllError(
            f"--checkpoint {printable(checkpoint)} is the --out file: give the checkpoint another path"
        ) from None
    # the checkpoint is written every --checkpoint-every steps, and the default one is deleted at
    # the end even when none was written: never one of the inputs
    check_not_input(checkpoint, args.codebook, args.weights, args.calibration, flag="--checkpoint")
    if config.checkpoint_every:
        check_writable(checkpoint)
    codebook = load_codebook(args.codebook)
    net = _network(args, calibration=True)
    result = compress(
        net,
        codebook,
        config,
        checkpoint=checkpoint if config.checkpoint_every else None,
        resume=args.resume,
        progress=not args.json and rank == 0,
        block_cache=args.block_cache,
    )
    if rank != 0:
        return 0  # rank 0 writes the artifact and reports
    save_network(args.out, result.artifact)
    if checkpoint.exists() and not args.checkpoint:
        checkpoint.unlink()  # the run finished: its default checkpoint has served
    info = {
        "file": args.out,
        **{k: v for k, v in result.report.items() if k != "config"},
        **network_sizes(result.artifact),
    }
    _emit(
        args,
        info,
        f"wrote {printable(args.out)}: {_name(net.name)} in "
        + (f"{len(info['blocks'])} blocks ({info['block_steps']} steps) and " if info["blocks"] else "")
        + f"{info['steps']} end-to-end steps ({info['seconds']:.0f} s), "
        f"{info['frozen_by_pnc']} sub-vectors frozen by PNC, {info['forced']} forced (finish {config.finish}); "
        f"{info['bits_per_weight']:.3f} bits/weight, compression {info['compression_ratio']:.2f}x"
        + _left_fp_text(info.get("left_fp", {})),
    )
    return 0


def cmd_eval(args) -> int:
    from .artifact import load_codebook, load_network
    from .evaluate import evaluate_artifact, evaluate_baseline, evaluate_model_artifact

    if args.model is not None:
        if args.artifact is None or args.codebook is None or args.baseline is not None:
            raise VQ4AllError("--model needs --artifact FILE and --codebook FILE (baselines are for zoo networks)")
        net = _network(args, calibration=True)
        codebook = load_codebook(args.codebook)
        art = load_network(args.artifact, codebook)
        info = evaluate_model_artifact(net, art, codebook, net.calibration(sys.maxsize))  # every given input
        top1 = f", top-1 agreement {info['top1_agreement']:.4f}" if "top1_agreement" in info else ""
        _emit(
            args,
            info,
            f"{_name(info['network'])} ({info['method']}) vs its FP model on {info['inputs']} inputs: "
            f"output cosine {info['cosine']:.4f}, relative MSE {info['relative_mse']:.4f}, "
            f"SQNR {info['sqnr_db']:.1f} dB{top1}; {info['bits_per_weight']:.3f} bits/weight, "
            f"compression {info['compression_ratio']:.2f}x",
        )
        return 0
    net = _network(args, calibration=False)
    if (args.artifact is None) == (args.baseline is None):
        raise VQ4AllError("give exactly one of --artifact FILE (with --codebook FILE) or --baseline fp|rtn2|kmeans")
    if args.artifact is not None:
        if args.codebook is None:
            raise VQ4AllError("--artifact needs --codebook FILE: the codebook the network was built on")
        codebook = load_codebook(args.codebook)
        art = load_network(args.artifact, codebook)
        info = evaluate_artifact(net, art, codebook)
    else:
        info = evaluate_baseline(net, args.baseline)
    _emit(
        args,
        info,
        f"{_name(info['network'])} ({info['method']}): {info['metric']} {info['value']:.4f} (FP {info['fp_value']:.4f}), "
        f"{info['bits_per_weight']:.3f} bits/weight, compression {info['compression_ratio']:.2f}x "
        f"({info['compression_ratio_with_codebook']:.2f}x with the codebook)",
    )
    return 0


# ----------------------------------------------------------------------------- inspect
def cmd_inspect(args) -> int:
    from .artifact import summarize

    info = summarize(args.file)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    elif info["kind"] == "codebook":
        print(
            f"{printable(info['file'])}: valid codebook, k={info['k']} d={info['d']} {info['dtype']} "
            f"({info['bits'] / 8 / 1024:.0f} KiB), sha256={info['sha256']}"
        )
    else:
        print(
            f"{printable(info['file'])}: valid network artifact of {_name(info['network'])}: {info['layers']} layers, "
            f"k={info['k']}, {info['bits_per_weight']:.3f} bits/weight, "
            f"compression {info['compression_ratio']:.2f}x, codebook {_name(info['codebook_sha256'])}"
        )
    return 0


# ----------------------------------------------------------------------------- hardware (rtl/, sim/)
def _int8_codebook(path):
    from .artifact import load_codebook

    cb = load_codebook(path)
    if cb.dtype != "int8":
        raise VQ4AllError(
            f"{printable(path)}: a {cb.dtype} codebook has no integer datapath: "
            "the engine and its ROM files need an int8 codebook"
        )
    return cb


def cmd_rom_export(args) -> int:
    from .hw.rtl.romfiles import FORMATS, rom_file_text
    from .io import atomic_write_bytes, check_not_input, check_writable

    if args.format not in FORMATS:
        raise VQ4AllError(f"unknown ROM format '{_name(args.format)}': choose one of {', '.join(FORMATS)}")
    check_writable(args.out)
    check_not_input(args.out, args.codebook)
    cb = _int8_codebook(args.codebook)
    width = 8 if args.width is None else args.width
    try:
        text = rom_file_text(args.format, cb, width)
    except ValueError as e:
        raise VQ4AllError(f"{printable(args.codebook)}: {printable(e, 400)}") from None
    atomic_write_bytes(args.out, text.encode())
    info = {
        "file": args.out,
        "format": args.format,
        "k": cb.k,
        "d": cb.d,
        "width": width,
        "word_bits": cb.d * width,
        "sha256": cb.sha256,
    }
    _emit(
        args,
        info,
        f"wrote {printable(args.out)}: {args.format} ROM of {cb.k} words x {cb.d * width} bits, "
        f"codebook sha256={cb.sha256}",
    )
    return 0


def generated_files() -> list[str]:
    """The names of the files `vq4all rtl generate` writes into --out-dir (hw.rtl.generate)."""
    from .hw.rtl.generate import TOP
    from .hw.rtl.romfiles import FORMATS, SUFFIX

    return [f"{TOP}.v", f"{TOP}.il", f"{TOP}_readmemh.v", *(f"codebook{SUFFIX[f]}" for f in FORMATS), "manifest.json"]
    # (a split ROM writes a subset of these; every name is checked all the same)


def cmd_rtl_generate(args) -> int:
    from pathlib import Path

    from .hw.rtl.config import EngineConfig
    from .hw.rtl.generate import generate
    from .io import check_not_input

    cb = _int8_codebook(args.codebook)
    given = {"lanes": args.lanes, "acc_bits": args.acc_bits, "max_m": args.max_m, "rom_width": args.rom_width}
    config = EngineConfig(
        k=cb.k, d=cb.d, requant=args.requant, pack=args.pack, **{k: v for k, v in given.items() if v is not None}
    )
    # the folder may hold the codebook, but no generated file may overwrite it
    out_dir = Path(args.out_dir)
    for name in generated_files():
        check_not_input(out_dir / name, args.codebook, flag=f"--out-dir {printable(out_dir)}: the generated file")
    start = time.perf_counter()
    manifest = generate(cb, args.out_dir, config, progress=not args.json)
    info = {
        "out_dir": args.out_dir,
        "files": sorted(manifest["files"]),
        "config": manifest["config"],
        "codebook_sha256": cb.sha256,
        "seconds": round(time.perf_counter() - start, 3),
    }
    _emit(
        args,
        info,
        f"wrote {len(manifest['files'])} files + manifest.json to {printable(args.out_dir)}: engine k={cb.k} d={cb.d} "
        f"lanes={config.lanes}{' packing rows' if config.pack else ''} ({info['seconds']:.1f} s), "
        f"codebook sha256={cb.sha256}",
    )
    return 0


def cmd_sim(args) -> int:
    import numpy as np

    from .artifact import load_network
    from .hw.rtl.config import EngineConfig
    from .hw.sim.layer import random_layer, run_layer
    from .hw.sim.runner import SIMULATORS
    from .hw.sim.streams import quantize_int8

    simulator = args.simulator or "icarus"
    if simulator not in SIMULATORS:
        raise VQ4AllError(f"unknown simulator '{_name(simulator)}': choose one of {', '.join(SIMULATORS)}")
    if (args.artifact is None) != (args.layer is None):
        raise VQ4AllError("give --artifact FILE and --layer NAME together (or neither, for a random layer)")
    cb = _int8_codebook(args.codebook)
    lanes = 1 if args.lanes is None else args.lanes
    EngineConfig(k=cb.k, d=cb.d, lanes=lanes, pack=args.pack)  # a bad --lanes fails here, before any work
    backpressure = 0.0 if args.backpressure is None else args.backpressure  # in [0, 1): its type checks
    seed = 0 if args.seed is None else args.seed
    row_factors = None
    if args.artifact is None:
        x, codes = random_layer(cb.k, cb.d, seed)
        name, source = "random", "random"
        if args.requant:  # random per-row factors: the outputs still span the int8 range
            row_factors = np.random.default_rng(seed).uniform(0.5, 2.0, codes.shape[0])
    else:
        art = load_network(args.artifact, cb)
        names = [layer.name for layer in art.layers]
        if args.layer not in names:
            shown = ", ".join(_name(n) for n in names[:20]) + (
                f" (and {len(names) - 20} more)" if len(names) > 20 else ""
            )
            raise VQ4AllError(
                f"unknown layer '{_name(args.layer)}' in {printable(args.artifact)}: choose one of {shown}"
            )
        layer = art.layers[names.index(args.layer)]
        codes, name = layer.codes, layer.name
        from . import zoo
        from .hw.layer_inputs import real_input

        net = None
        if args.model is not None:  # the user's own network runs its calibration input
            net = _network(args, calibration=True)
        elif art.network in zoo.NAMES:
            net = zoo.load(art.network)
        try:
            if net is None:
                raise VQ4AllError(
                    f"'{_name(art.network)}' is not a zoo network: give --model/--weights/--calibration for a real input"
                )
            vec = real_input(net, layer.param, seed)
            source = f"real ({_name(net.name)} calibration sample, int8 by max|x|/127)"
        except VQ4AllError as e:  # no network to run, or a layer without one shared input vector
            vec = np.random.default_rng(seed).standard_normal(layer.row)
            source = f"random normal ({printable(e, 4 * MAX_NAME_CHARS)})"
        x, x_scale = quantize_int8(vec)
        if args.requant:  # the layer's real scales: row scale x codebook scale x activation scale
            row_factors = layer.scales.astype(np.float64) * cb.scale * x_scale
    result = run_layer(
        cb,
        codes,
        x,
        name=name,
        lanes=lanes,
        simulator=simulator,
        backpressure=backpressure,
        seed=seed,
        row_factors=row_factors,
        pack=args.pack,
    )
    result["input"] = source
    _emit(
        args,
        result,
        f"{_name(name)}: {result['outputs']} outputs, {result['mismatches']} mismatches vs the reference, "
        f"{result['cycles']} cycles, MAC utilization {result['mac_utilization']:.3f} "
        f"({simulator}, k={cb.k}, lanes={lanes}{', packing rows' if args.pack else ''}, input {source})",
    )
    return 0 if result["mismatches"] == 0 else 1


def cmd_run_hw(args) -> int:
    from . import zoo
    from .artifact import load_network
    from .hw.host import prepare, run_network
    from .hw.sim.runner import SIMULATORS
    from .integer.networks import recipe

    simulator = args.simulator or "icarus"
    if simulator not in SIMULATORS:
        raise VQ4AllError(f"unknown simulator '{_name(simulator)}': choose one of {', '.join(SIMULATORS)}")
    if args.network not in zoo.NAMES:
        raise VQ4AllError(f"unknown network '{_name(args.network)}': choose one of {', '.join(zoo.NAMES)}")
    recipe(args.network)  # a zoo network the integer executor has no recipe for
    cb = _int8_codebook(args.codebook)
    art = load_network(args.artifact, cb)
    net = zoo.load(args.network)
    given = {
        "lanes": args.lanes or 1,
        "max_m": args.max_m or EngineConfig.max_m,
        "simulator": simulator,
        "pack": args.pack,
    }
    prepare(net, art, cb, rom_file=args.rom_file, **given)  # every check before the long work
    report = run_network(
        net, art, cb, limit=args.limit, rom_file=args.rom_file, progress=not args.json, task=_eval_task(net), **given
    )
    _emit(args, report, _run_hw_text(report))
    return 0 if report["mismatches"] == 0 else 1


def _eval_task(net):
    """The network's evaluation set for `run-hw` (integer.eval_task; digits_cnn's test split comes
    from the zoo's data module, which the integer and hw layers may not import)."""
    from .integer import eval_task

    if net.name == "digits_cnn":
        from .zoo import data

        return eval_task(net, *data.digits_split()[2:])
    return eval_task(net)


def _run_hw_text(r: dict) -> str:
    lines = [
        f"{r['network']} on the {r['simulator']} engine (k={r['k']} d={r['d']}, lanes {r['lanes']}"
        f"{', packing rows' if r.get('pack') else ''}, ROM {r['rom']}), "
        f"{r['inputs']} of {r['eval_size']} evaluation inputs",
        f"{'layer':<12}{'kind':<8}{'output':<9}{'rows':>6}{'in':>7}{'m':>6}{'GEMVs/in':>10}{'cycles/in':>11}"
        f"{'MAC util':>10}{'mismatch':>10}{'sim s':>8}",
    ]
    for e in r["layers"]:
        lines.append(
            f"{_name(e['name']):<12}{e['kind']:<8}{e['output']:<9}{e['rows']:>6}{e['in_features']:>7}{e['m']:>6}"
            f"{e['gemvs_per_input']:>10.0f}{e['cycles_per_input']:>11.0f}{e['mac_utilization']:>10.3f}"
            f"{e['mismatches']:>10}{e['build_seconds'] + e['run_seconds']:>8.1f}"
        )
    same = "identical to" if r["engine_equals_integer"] else "different from"
    lines.append(
        f"{r['metric']}: engine {r['engine']:.4f}, integer model {r['integer']:.4f}, float compressed "
        f"{r['float']:.4f}, FP {r['fp']:.4f} (same {r['inputs']} inputs)"
    )
    lines.append(
        f"{r['mismatches']} mismatches in {r['outputs']} engine results; network outputs {same} the integer "
        f"model's; {r['cycles']} cycles ({r['cycles'] / max(r['inputs'], 1):.0f} per input), "
        f"{r['seconds']['simulation']:.1f} s simulating ({r['seconds']['per_input']:.2f} s per input)"
    )
    return "\n".join(lines)


LANES = power_of_two(1, MAX_LANES)
PACK_HELP = (
    "row packing (lanes 1 or 2): 2 x lanes codes per cycle and no padding products, so rows that are not a "
    "multiple of d keep the MACs busy; rows must be at least d values"
)
SEED = int_in(*COMPRESS_INT_RANGES["seed"])


def _add_hw_parsers(sub, with_json) -> None:
    rom_p = sub.add_parser("rom", help="ROM init files of the codebook").add_subparsers(
        dest="rom_command", required=True
    )
    r = with_json(
        rom_p.add_parser(
            "export", help="write the codebook ROM as hex ($readmemh), mem (Lattice), coe (Xilinx) or mif (Intel)"
        )
    )
    r.add_argument("--codebook", required=True)
    r.add_argument("--format", required=True, help="hex, mem, coe or mif")
    r.add_argument("--width", type=int_in(1, 8), help=f"bits per codeword value, 1..8 (default {EngineConfig.width})")
    r.add_argument("--out", required=True)
    r.set_defaults(func=cmd_rom_export)

    rtl_p = sub.add_parser("rtl", help="the accelerator's RTL").add_subparsers(dest="rtl_command", required=True)
    g = with_json(
        rtl_p.add_parser("generate", help="Verilog, RTLIL, ROM files and manifest of the engine for a codebook")
    )
    g.add_argument("--codebook", required=True)
    g.add_argument("--out-dir", required=True)
    g.add_argument("--lanes", type=LANES, help=f"codes per cycle ({LANES.rule}, default {EngineConfig.lanes})")
    g.add_argument(
        "--acc-bits",
        type=int_in(ACT_BITS + EngineConfig.width, 64),
        help=f"accumulator width, {ACT_BITS + EngineConfig.width}..64 (default {EngineConfig.acc_bits})",
    )
    g.add_argument(
        "--max-m",
        type=int_in(1, MAX_M),
        help=f"most sub-vectors per row the activation buffer holds, 1..{MAX_M} (default {EngineConfig.max_m})",
    )
    g.add_argument("--requant", action="store_true", help="add the per-row fixed-point scale + int8 output stage")
    g.add_argument(
        "--rom-width",
        type=int_in(1, EngineConfig.width),
        help=f"split ROM: bits per value kept in block RAM, 1..{EngineConfig.width}, the rest rebuilt by logic "
        "(exact; e.g. 7 fits the 2^16 x 8 ROM on ECP5-85k); writes the inline Verilog and RTLIL only "
        "(default: whole values, every file)",
    )
    g.add_argument(
        "--pack",
        action="store_true",
        help=PACK_HELP,
    )
    g.set_defaults(func=cmd_rtl_generate)

    s = with_json(
        sub.add_parser(
            "sim", help="run one layer through the engine in an HDL simulator, checked against the reference"
        )
    )
    s.add_argument("--codebook", required=True)
    s.add_argument("--artifact", help="network artifact (with --layer); default: a random layer")
    s.add_argument("--layer", help="layer name in the artifact")
    s.add_argument(
        "--model",
        help="with --artifact of your own network: package.module:factory or file.py:factory, "
        "run on --calibration to capture the layer's real input",
    )
    s.add_argument("--weights", help="with --model: its state dict (.safetensors or .pt)")
    s.add_argument("--calibration", help="with --model: real inputs (.safetensors or .npy); the first one is used")
    s.add_argument("--simulator", help="icarus (default) or verilator")
    s.add_argument("--lanes", type=LANES, help=f"codes per cycle ({LANES.rule}, default {EngineConfig.lanes})")
    s.add_argument(
        "--backpressure",
        type=float_in(0.0, 1.0, hi_open=True),
        help="probability a stream beat is withheld each cycle, in [0, 1) (default 0)",
    )
    s.add_argument("--seed", type=SEED, help=f"{SEED.rule} (default 0)")
    s.add_argument(
        "--requant", action="store_true", help="with the requantization stage (int8 results from the real scales)"
    )
    s.add_argument(
        "--pack",
        action="store_true",
        help=PACK_HELP,
    )
    s.set_defaults(func=cmd_sim, network=None, name=None)

    h = with_json(
        sub.add_parser(
            "run-hw",
            help="a zoo network's integer model with every compressed layer on the simulated engine, "
            "checked bit for bit; the task metric of engine, integer, float compressed and FP models",
        )
    )
    h.add_argument("--network", required=True, help="digits_cnn, crepe_tiny or mtcnn_onet")
    h.add_argument("--artifact", required=True, help="the network's artifact (vq4all assign / compress)")
    h.add_argument("--codebook", required=True, help="the int8 codebook it was built on")
    h.add_argument("--simulator", help="icarus (default) or verilator")
    h.add_argument(
        "--limit", type=int_in(1, 1 << 20), help="run this many evaluation inputs, evenly spaced (default: all)"
    )
    h.add_argument("--lanes", type=LANES, help=f"codes per cycle ({LANES.rule}, default {EngineConfig.lanes})")
    h.add_argument(
        "--max-m",
        type=int_in(1, MAX_M),
        help=f"most sub-vectors per row the engine holds, 1..{MAX_M} (default {EngineConfig.max_m})",
    )
    h.add_argument("--rom-file", help="run the $readmemh engine with this ROM file (vq4all rom export --format hex)")
    h.add_argument(
        "--pack",
        action="store_true",
        help=PACK_HELP,
    )
    h.set_defaults(func=cmd_run_hw)


# ----------------------------------------------------------------------------- parser
def _add_network_args(q) -> None:
    """--network (a zoo network) or --model/--weights/--calibration/--name (any model)."""
    q.add_argument("--network", help="a zoo network (see `vq4all zoo list`)")
    q.add_argument(
        "--model",
        help="your own network: package.module:factory or path/to/file.py:factory, a callable "
        "returning the torch.nn.Module",
    )
    q.add_argument("--weights", help="with --model: its state dict (.safetensors, or .pt read with weights_only=True)")
    q.add_argument(
        "--calibration", help="with --model: a batch of real inputs (.safetensors or .npy, first dim = inputs)"
    )
    q.add_argument(
        "--name", help="with --model: the network name stored in the artifact (default: the model's class name)"
    )


def _int_flag(q, flag: str, ranges: dict, field: str, text: str) -> None:
    """An integer flag whose range is the config's for `field` (one source of truth)."""
    kind = int_in(*ranges[field])
    q.add_argument(flag, type=kind, help=f"{text}; {kind.rule}")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="vq4all", description="Universal-codebook neural network compression.")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", required=True)

    def with_json(q):
        q.add_argument("--json", action="store_true", help="print one JSON object")
        return q

    zoo_p = sub.add_parser("zoo", help="the bundled real networks").add_subparsers(dest="zoo_command", required=True)
    with_json(zoo_p.add_parser("list", help="name, parameters, compressible parameters, metric")).set_defaults(
        func=cmd_zoo_list
    )

    cb_p = sub.add_parser("codebook", help="the universal codebook").add_subparsers(
        dest="codebook_command", required=True
    )
    b = with_json(cb_p.add_parser("build", help="build a universal codebook by KDE from zoo networks"))
    b.add_argument("--networks", required=True, help="comma-separated zoo names (see `vq4all zoo list`)")
    b.add_argument(
        "--k",
        type=power_of_two(rules.MIN_K, rules.MAX_K),
        help=f"codewords, a power of two in {rules.MIN_K}..{rules.MAX_K} (default {CodebookConfig.k})",
    )
    b.add_argument(
        "--d",
        type=int_in(rules.MIN_D, rules.MAX_D),
        help=f"sub-vector dimension, {rules.MIN_D}..{rules.MAX_D} (default {CodebookConfig.d})",
    )
    _int_flag(
        b,
        "--per-network",
        CODEBOOK_INT_RANGES,
        "per_network",
        f"sub-vectors pooled per network (default {CodebookConfig.per_network})",
    )
    b.add_argument("--bandwidth", type=bandwidth, help="scott (default), silverman or a fixed h > 0")
    b.add_argument(
        "--dtype", choices=rules.CODEBOOK_DTYPES, help=f"stored codeword precision (default {CodebookConfig.dtype})"
    )
    b.add_argument(
        "--scale-granularity", choices=rules.GRANULARITIES, help=f"default {CodebookConfig.scale_granularity}"
    )
    _int_flag(
        b,
        "--lloyd-iters",
        CODEBOOK_INT_RANGES,
        "lloyd_iters",
        f"Lloyd refinement steps after sampling (default {CodebookConfig.lloyd_iters})",
    )
    _int_flag(b, "--seed", CODEBOOK_INT_RANGES, "seed", "default 0")
    b.add_argument("--out", required=True, help="codebook file to write (.safetensors)")
    b.set_defaults(func=cmd_codebook_build)

    from .usage import add_reorder_parser  # vq4all codebook reorder (usage-ordered codebook)

    add_reorder_parser(cb_p, with_json)

    a = with_json(sub.add_parser("assign", help="hard-assign a network to a codebook (no training)"))
    _add_network_args(a)
    a.add_argument("--codebook", required=True)
    a.add_argument("--scale-granularity", choices=rules.GRANULARITIES)
    a.add_argument(
        "--search",
        choices=rules.SEARCHES,
        help="nearest codeword by the plain distance (default), weighted by the mean square of each layer's "
        "inputs (activations), or under the inputs' second moments with each row coded one sub-vector at a time and the "
        "rest of the row absorbing the error (hessian); both use the network's calibration data "
        "(--model needs --calibration)",
    )
    a.add_argument("--out", required=True)
    a.set_defaults(func=cmd_assign)

    c = with_json(sub.add_parser("compress", help="rebuild a network on the codebook by distillation with PNC"))
    _add_network_args(c)
    c.add_argument(
        "--loss",
        choices=rules.DISTILL_LOSSES,
        help="with --model: distillation loss on its output: mse (default; any output), kl (logits), cosine (embeddings)",
    )
    c.add_argument("--codebook", required=True)
    c.add_argument("--out", required=True, help="network artifact to write (.safetensors)")
    c.add_argument(
        "--alpha",
        type=float_in(0.0, 1.0, lo_open=True, hi_open=True),
        help=f"PNC threshold on the largest ratio, in (0, 1) (default {CompressConfig.alpha})",
    )
    _int_flag(
        c,
        "--n",
        COMPRESS_INT_RANGES,
        "n",
        f"candidate codewords per sub-vector, at most k (default {CompressConfig.n})",
    )
    _int_flag(c, "--steps", COMPRESS_INT_RANGES, "steps", f"step budget (default {CompressConfig.steps})")
    c.add_argument(
        "--no-pnc",
        action="store_true",
        help="train the same budget, then freeze every sub-vector by --finish at the end",
    )
    c.add_argument("--init", choices=rules.INITS, help=f"initial ratios (default {CompressConfig.init})")
    c.add_argument(
        "--search",
        choices=rules.SEARCHES,
        help="how each sub-vector's n candidates are chosen: nearest by the plain distance (plain), by the "
        "distance weighted by the mean square of the layer's inputs on the calibration data (activations), or "
        "under the inputs' second moments with each row coded one sub-vector at a time, the rest absorbing the error "
        f"(hessian); default {CompressConfig.search}",
    )
    c.add_argument(
        "--schedule",
        choices=rules.SCHEDULES,
        help="PNC alone (threshold) or PNC plus a quota frozen fraction >= step/steps (linear); "
        f"default {CompressConfig.schedule}",
    )
    c.add_argument(
        "--finish",
        choices=rules.FINISH_RULES,
        help="how sub-vectors frozen without passing alpha choose: largest ratio (argmax) or the "
        f"candidate nearest to their current mixture (nearest); default {CompressConfig.finish}",
    )
    c.add_argument(
        "--lr",
        type=float_in(0.0, lo_open=True),
        help=f"Adam learning rate of the logits, finite and > 0 (default {CompressConfig.lr})",
    )
    c.add_argument(
        "--reg",
        type=float_in(0.0),
        help=f"weight of the ratio regulariser sum r(1-r), finite and >= 0 (default {CompressConfig.reg})",
    )
    c.add_argument(
        "--feature-weight",
        type=float_in(0.0),
        help="weight of the layer-wise feature MSE against the teacher, finite and >= 0 "
        f"(default {CompressConfig.feature_weight}; 0 is off)",
    )
    _int_flag(
        c, "--batch-size", COMPRESS_INT_RANGES, "batch_size", f"inputs per step (default {CompressConfig.batch_size})"
    )
    _int_flag(
        c,
        "--calibration-count",
        COMPRESS_INT_RANGES,
        "calibration",
        f"most calibration inputs used (default: the network's, {rules.DEFAULT_CALIBRATION} unless a zoo "
        "network says more; a zoo network makes that many, a --calibration file gives its first)",
    )
    _int_flag(c, "--seed", COMPRESS_INT_RANGES, "seed", f"default {CompressConfig.seed}")
    c.add_argument("--checkpoint", help="checkpoint file (default OUT.ckpt, removed when the run finishes)")
    _int_flag(
        c,
        "--checkpoint-every",
        COMPRESS_INT_RANGES,
        "checkpoint_every",
        f"steps between checkpoints (default {CompressConfig.checkpoint_every}; 0 = none)",
    )
    c.add_argument("--resume", action="store_true", help="continue the interrupted run from its checkpoint")
    c.add_argument(
        "--mode",
        choices=rules.MODES,
        help="blockwise: reconstruct block by block, then a short end-to-end pass; end_to_end: distil the "
        f"output only; auto: blockwise above {rules.BLOCKWISE_ABOVE:,} weights (default {CompressConfig.mode})",
    )
    c.add_argument(
        "--blocks",
        help="comma-separated module names of the blocks (default: the zoo network's, or the model's "
        "top-level children with containers opened)",
    )
    _int_flag(
        c,
        "--block-steps",
        COMPRESS_INT_RANGES,
        "block_steps",
        f"most steps per block (default {CompressConfig.block_steps})",
    )
    _int_flag(
        c,
        "--finetune-steps",
        COMPRESS_INT_RANGES,
        "finetune_steps",
        f"end-to-end steps after the blocks (default {CompressConfig.finetune_steps})",
    )
    c.add_argument("--block-cache", help="folder for the cached block inputs and outputs (default: the temp folder)")
    c.set_defaults(func=cmd_compress)

    e = with_json(
        sub.add_parser(
            "eval",
            help="task metric (zoo) or output agreement with the FP model (--model) of an artifact, or a zoo baseline",
        )
    )
    _add_network_args(e)
    e.add_argument("--artifact")
    e.add_argument("--codebook")
    e.add_argument("--baseline", choices=["fp", "rtn2", "kmeans"])
    e.set_defaults(func=cmd_eval)

    i = with_json(sub.add_parser("inspect", help="validate and summarise a codebook or network file"))
    i.add_argument("file")
    i.set_defaults(func=cmd_inspect)

    _add_hw_parsers(sub, with_json)
    return p


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what `yes | head -1` reports for `yes`


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0), or a bad argument: its one line is printed already (2)
        return e.code if isinstance(e.code, int) else 2
    # a name from a file's header may hold lone surrogates: escape them rather than crash printing
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        status = args.func(args)
        sys.stdout.flush()  # inside the try: a closed pipe shows up here at the latest
        return status
    except BrokenPipeError:
        # the reader went away (`vq4all inspect F --json | head -1`): stop quietly, like a tool
        # killed by SIGPIPE, instead of a traceback
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except VQ4AllError as e:
        if args.debug:
            raise
        # one short line, whatever a name held: the last guard for any untrusted text in a message
        print(f"vq4all: error: {printable(e, MAX_ERROR_CHARS)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vq4all: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

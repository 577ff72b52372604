"""What the GPU compiler makes of each kernel config, on a machine without a GPU: a CPU-side proxy.

    .venv/bin/python benches/kernel_asm.py [--arch 90] [--shape 4096x4096] [--name kernel_asm]
                                           [--compare benches/results/kernel_asm/before.json]

For the launches the dispatch table plans on CUDA (GEMV at M = 1, 4; GEMM at M = 16, 64, 256;
both codebook configs; fp16 and bf16 x), the GEMV's code-tile path (gemv-tiles: codes whose rows are not whole 8-byte words) and the
table GEMV (lut, k = 256 x 4, M = 1, 4), on an out x in layer (--shape), with split-K chosen as
on an H200 (132 SMs), compiles the kernel for sm_<arch> with Triton's own compiler, assembles
it with ptxas and disassembles the cubin with nvdisasm (all three ship with triton), then counts
in the SASS of the main loop (the K loop: the longest backward branch) what one loop step costs:

  instructions   every SASS instruction but NOP
  barriers       BAR.* (block-wide: every warp waits)
  shuffles       SHFL.* (warp shuffles: the cross-lane part of tl.sum)
  int->float     I2F*/I2FP* (int8/int16/int32 -> float conversions; the slow path on sm_90
                 runs at a quarter of the FP32 rate)
  global loads   LDG* (plain loads; gathers included) and LDGSTS (cp.async) / UTMALDG (TMA)
  shared         LDS*/LDSM/STS*/STSM

Per weight: a loop step of one program covers BLOCK_N x BLOCK_J x D weights (the codes tile
times d) with 32 x num_warps threads, each executing the step's instructions once, so
  per weight = (count in the loop body) x 32 x num_warps / (BLOCK_N x BLOCK_J x D)
(thread-instructions per weight, the issue's "instructions per weight"). "Whole program" adds
the prologue and epilogue: (outside + body x steps) x threads / (weights one program covers).
The compute-issue bound divides what the SMs can issue (132 SMs x 4 schedulers x 32 lanes x
--clock-ghz) by the instructions per weight: a kernel with n instructions per weight cannot
exceed that many weights per second whatever its memory does; cuBLAS fp16 at M = 1 streams at
most --hbm-gbs / 2 bytes per weight. Also: block sizes, programs per SM, shared memory,
registers and spills (ptxas -v), wgmma, the PTX counts of the same loop (bar.sync, shfl, cvt).
Writes <name>.md and <name>.json into --out. A first look between GPU runs; never a substitute
for timing on the GPU (benches/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from vq4all.io import atomic_write_bytes

CASES = [  # (kernel module, M, k, d, x dtype)
    ("gemv", 1, 1 << 16, 8, "float16"),
    ("gemv", 4, 1 << 16, 8, "float16"),
    ("gemv", 1, 256, 4, "float16"),
    ("gemv-tiles", 1, 1 << 16, 8, "float16"),
    ("gemv-tiles", 1, 256, 4, "float16"),
    ("lut", 1, 256, 4, "float16"),
    ("lut", 4, 256, 4, "float16"),
    ("gemm", 16, 1 << 16, 8, "float16"),
    ("gemm", 64, 1 << 16, 8, "float16"),
    ("gemm", 256, 1 << 16, 8, "float16"),
    ("gemm", 16, 256, 4, "float16"),
    ("gemm", 256, 256, 4, "float16"),
    ("gemm", 256, 1 << 16, 8, "bfloat16"),
]


def gpu_stack() -> SimpleNamespace:
    """torch, triton and the kernel modules, imported on first use, never at import: the kernels
    decide at their import whether they are interpreted, so loading this file (tests of its
    parsers) must not import them in a process that runs them under TRITON_INTERPRET."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        sys.exit("kernel_asm.py compiles for the GPU: unset TRITON_INTERPRET")
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton >= 3.9 warns when unset; 1 is its default
    import torch
    import triton

    from vq4all.kernels import gemm, gemv, lut
    from vq4all.kernels.args import check_args
    from vq4all.kernels.triton_support import compile_for_gpu

    return SimpleNamespace(
        torch=torch,
        triton=triton,
        gemm=gemm,
        gemv=gemv,
        lut=lut,
        kernels={
            "gemv": gemv._lookup_gemv_kernel,
            "lut": lut._lookup_lut_kernel,
            "gemm": gemm._lookup_gemm_kernel,
        },
        check_args=check_args,
        compile_for_gpu=compile_for_gpu,
    )


H200_SMS = 132  # PyTorch's multi_processor_count on the H200 (KINDS.md)

# SASS opcode classes (the mnemonic before its first '.')
SASS_CLASSES = {
    "barriers": ("BAR",),
    "shuffles": ("SHFL",),
    "int_to_float": ("I2F", "I2FP"),
    "float_to_float": ("F2F", "F2FP"),
    "global_loads": ("LDG",),
    "async_copies": ("LDGSTS", "UTMALDG", "UBLKCP"),
    "shared_loads": ("LDS", "LDSM"),
    "shared_stores": ("STS", "STSM"),
    "mma": ("HMMA", "HGMMA", "IMMA", "IGMMA"),
    "fp32_math": ("FFMA", "FADD", "FMUL", "FMNMX"),
    "global_stores_atomics": ("STG", "RED", "REDG", "ATOMG", "ATOM"),
}
PTX_CLASSES = {  # regexes on PTX instruction text
    "barriers": r"^(bar|barrier)\.",
    "shuffles": r"^shfl\.",
    "cvt": r"^cvt\.",
    "cvt_to_float_from_int": r"^cvt\.[a-z]*\.?f(16|32|64)\.[su](8|16|32|64)",
    "global_loads": r"^ld\.global",
    "async_copies": r"^cp\.async",
}

_SASS_LINE = re.compile(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z0-9_]+)([.A-Z0-9_]*)\s*(.*?);")
_SASS_LABEL = re.compile(r"^(\.L_x_\d+):")
_SASS_BRANCH = re.compile(r"\bBRA\b.*`\((\.L_x_\d+)\)")


def tool(name: str) -> str | None:
    """A CUDA binary triton ships (ptxas, nvdisasm, cuobjdump), or one on PATH."""
    spec = importlib.util.find_spec("triton")  # located, not imported
    folder = os.path.join(os.path.dirname(spec.origin), "backends", "nvidia", "bin") if spec and spec.origin else ""
    for candidate in (os.path.join(folder, name), *(os.path.join(p, name) for p in os.environ["PATH"].split(":"))):
        if os.path.exists(candidate):
            return candidate
    return None


def ptxas_info(ptx: str, arch: int) -> str:
    """Registers and spills from ptxas -v (the newest ptxas triton ships reads its PTX)."""
    tools = [t for t in (tool("ptxas-blackwell"), tool("ptxas")) if t]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        for t in tools:
            r = subprocess.run(
                [t, f"-arch=sm_{arch}a", "-v", src, "-o", os.path.join(tmp, "k.cubin")], capture_output=True, text=True
            )
            if r.returncode == 0:
                lines = (r.stdout + r.stderr).splitlines()
                return "; ".join(l.split("info    :")[-1].strip() for l in lines if "registers" in l or "spill" in l)
    return "ptxas -v unavailable"


def sass_of(cubin: bytes) -> str | None:
    """nvdisasm's text of a cubin (None when no disassembler is found)."""
    nvdisasm = tool("nvdisasm")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        if nvdisasm:
            r = subprocess.run([nvdisasm, "-c", path], capture_output=True, text=True)
            if r.returncode == 0:
                return r.stdout
        cuobjdump = tool("cuobjdump")
        if cuobjdump:
            r = subprocess.run([cuobjdump, "-sass", path], capture_output=True, text=True)
            if r.returncode == 0:
                return r.stdout
    return None


def parse_sass(text: str) -> tuple[list[tuple[str, str]], tuple[int, int] | None]:
    """(instructions [(opcode, full mnemonic)], (first, last) index of the main loop's body or None).

    The main loop is the backward branch spanning the most instructions (nvdisasm labels its
    targets `.L_x_N:`); a branch to itself (the trap loop after EXIT) is not a loop."""
    instrs, labels, branches = [], {}, []
    for line in text.splitlines():
        label = _SASS_LABEL.match(line.strip())
        if label:
            labels[label.group(1)] = len(instrs)
            continue
        m = _SASS_LINE.match(line)
        if not m:
            continue
        op, suffix = m.group(1), m.group(2)
        target = _SASS_BRANCH.search(line)
        if op == "BRA" and target:
            branches.append((len(instrs), target.group(1)))
        instrs.append((op, op + suffix))
    loop, span = None, 0
    for at, target in branches:
        start = labels.get(target)
        if start is not None and start < at and at - start > span:
            loop, span = (start, at), at - start
    return instrs, loop


def count_sass(instrs: list[tuple[str, str]]) -> dict:
    """{class: count} for SASS_CLASSES, "instructions" (all but NOP) and "opcodes" (a histogram)."""
    ops = [op for op, _ in instrs if op != "NOP"]
    out = {"instructions": len(ops)}
    for name, prefixes in SASS_CLASSES.items():
        out[name] = sum(op in prefixes for op in ops)
    hist: dict[str, int] = {}
    for _, full in instrs:
        if not full.startswith("NOP"):
            hist[full] = hist.get(full, 0) + 1
    out["opcodes"] = dict(sorted(hist.items(), key=lambda kv: -kv[1]))
    return out


def ptx_loop_counts(ptx: str) -> dict | None:
    """PTX_CLASSES counts (and all instructions) in the longest backward-branch loop of the PTX."""
    lines = [l.split("//")[0].strip() for l in ptx.splitlines()]
    instrs, labels, loop, span = [], {}, None, 0
    for l in lines:
        if not l:
            continue
        if re.match(r"^\$L__BB\d+_\d+:", l):
            labels[l[:-1]] = len(instrs)
            continue
        if l.startswith((".", "$", "{", "}", ")", "(")) or not l.endswith(";"):
            continue
        text = re.sub(r"^@!?%p\d+\s+", "", l)
        m = re.search(r"\bbra(\.uni)?\s+(\$L__BB\d+_\d+);", text)
        if m and m.group(2) in labels and len(instrs) - labels[m.group(2)] > span:
            loop, span = (labels[m.group(2)], len(instrs)), len(instrs) - labels[m.group(2)]
        instrs.append(text)
    if loop is None:
        return None
    body = instrs[loop[0] : loop[1] + 1]
    out = {"instructions": len(body)}
    for name, pattern in PTX_CLASSES.items():
        out[name] = sum(bool(re.match(pattern, t)) for t in body)
    return out


def measure(kind, batch, k, d, x_name, out_features, in_features, arch, hw) -> dict:
    st = gpu_stack()
    torch, triton = st.torch, st.triton
    module, x_dtype = getattr(st, kind.split("-")[0]), getattr(st.torch, x_name)
    m = -(-in_features // d)
    args = st.check_args(
        torch.zeros(batch, in_features, dtype=x_dtype),
        torch.zeros(out_features, m, dtype=torch.uint16 if k > 256 else torch.uint8),
        torch.zeros(k, d, dtype=torch.int8),
        torch.ones(out_features, dtype=torch.float16),
        torch.ones(1),
    )
    options = {"use_words": False} if kind == "gemv-tiles" else {}  # the GEMV's fallback path
    launch = module.plan(args, sms=H200_SMS, **options)  # block sizes for CUDA, split-K as on an H200
    kernel = st.kernels[kind.split("-")[0]]
    start = time.perf_counter()
    compiled = st.compile_for_gpu(kernel, launch, arch)
    compile_s = time.perf_counter() - start
    ptx = compiled.asm["ptx"]
    c = launch.constexprs
    warps = launch.options.get("num_warps", 4)
    threads = 32 * warps
    programs = 1
    for g in launch.grid:
        programs *= g
    row = {
        "kernel": kind,
        "M": batch,
        "k": k,
        "d": d,
        "x": x_name,
        "shape": f"{out_features}x{in_features}",
        "blocks": {key: v for key, v in c.items() if key.startswith(("BLOCK", "GROUP"))},
        "options": dict(launch.options),
        "split_k": launch.grid[-1],
        "grid": list(launch.grid),
        "programs_per_sm": programs / H200_SMS,
        "shared_bytes": compiled.metadata.shared,
        "ptxas": ptxas_info(ptx, arch),
        "wgmma": "wgmma" in ptx,
        "compile_s": round(compile_s, 2),
    }
    weights_step = c.get("BLOCK_N", 0) * c.get("BLOCK_J", 0) * d
    import inspect

    runtime = [n for n in inspect.signature(kernel.fn).parameters if n not in c]
    j_per_split = dict(zip(runtime, launch.args)).get("J_PER_SPLIT", m)  # code columns per program
    steps = triton.cdiv(min(j_per_split, m), c["BLOCK_J"]) if c.get("BLOCK_J") else None
    weights_program = c.get("BLOCK_N", 0) * min(j_per_split * d, in_features)
    row.update(weights_per_step=weights_step, steps_per_program=steps, weights_per_program=weights_program)
    sass = sass_of(compiled.asm["cubin"])
    if sass is None:
        row["sass"] = None
        return row
    instrs, loop = parse_sass(sass)
    whole = count_sass(instrs)
    row["sass_total"] = whole
    if loop is None or not weights_step:
        row["sass_loop"] = None
        return row
    body = count_sass(instrs[loop[0] : loop[1] + 1])
    outside = whole["instructions"] - body["instructions"]
    row["sass_loop"] = body
    row["per_weight"] = {
        name: body[name] * threads / weights_step for name in ("instructions", *SASS_CLASSES) if name in body
    }
    row["per_weight"]["whole_program_instructions"] = (
        (outside + body["instructions"] * steps) * threads / weights_program if steps and weights_program else None
    )
    per_w = row["per_weight"]["instructions"]
    row["issue_bound_gweights_s"] = hw["sms"] * 4 * 32 * hw["clock_ghz"] / per_w if per_w else None
    cvt = row["per_weight"]["int_to_float"]
    row["conversion_bound_gweights_s"] = hw["sms"] * hw["cvt_per_clk"] * hw["clock_ghz"] / cvt if cvt else None
    row["ptx_loop"] = ptx_loop_counts(ptx)
    return row


def markdown(rows: list[dict], meta: dict, before: dict | None) -> str:
    lines = [
        "# Kernel SASS proxy (sm_90, no GPU): cost of one main-loop step, per weight",
        "",
        ", ".join(f"{k}: {v}" for k, v in meta.items()),
        "",
        "Per loop step of one program: SASS instructions and their classes (barriers, warp shuffles, "
        "int->float conversions, global loads). Per weight = count x 32 x num_warps / (BLOCK_N x BLOCK_J x d): "
        "thread-instructions per compressed weight. Issue bound = 132 SMs x 4 x 32 lanes x clock / "
        "(instructions per weight); conversion bound = 132 SMs x conversions/clk/SM x clock / (int->float "
        f"per weight). Neither counts memory: gathers are timed on the GPU. cuBLAS fp16 at M = 1 streams at most {meta['cublas_m1_gweights_s']:.0f} "
        "Gweights/s from HBM.",
        "",
        "| kernel | M | k x d | x | blocks (N, J, M) / warps | split-K, programs/SM | loop instr | barriers "
        "| shuffles | int->float | LDG / async | instr/weight | whole program instr/weight | issue / conversion bound GW/s "
        "| regs, spills | wgmma |" + (" per weight before: instr / BAR / SHFL / I2F | now |" if before else ""),
        "|---|---:|---|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|---|" + ("---|---|" if before else ""),
    ]
    for r in rows:
        b = r["blocks"]
        blocks = f"{b.get('BLOCK_N')}, {b.get('BLOCK_J')}, {b.get('BLOCK_M')} / {r['options'].get('num_warps')}"
        regs = re.search(r"Used (\d+) registers", r["ptxas"])
        spill = re.search(r"(\d+) bytes spill stores", r["ptxas"])
        regs_text = f"{regs.group(1) if regs else '?'}, {spill.group(1) if spill else '?'} B"
        loop, pw = r.get("sass_loop"), r.get("per_weight")
        if not loop:
            cells = "| – " * 8
        else:
            whole = pw["whole_program_instructions"]
            conv = r.get("conversion_bound_gweights_s")
            conv_text = f"{conv:.0f}" if conv else "–"
            cells = (
                f"| {loop['instructions']} | {loop['barriers']} | {loop['shuffles']} | {loop['int_to_float']} "
                f"| {loop['global_loads']} / {loop['async_copies']} | {pw['instructions']:.2f} "
                f"| {'–' if whole is None else f'{whole:.2f}'} | {r['issue_bound_gweights_s']:.0f} / "
                f"{conv_text} "
            )
        line = (
            f"| {r['kernel']} | {r['M']} | {r['k']}x{r['d']} | {r['x']} | {blocks} "
            f"| {r['split_k']}, {r['programs_per_sm']:.1f} {cells}| {regs_text} | {r['wgmma']} |"
        )
        if before:
            old = before.get(case_key(r)) or before.get(case_key({**r, "kernel": REPLACES.get(r["kernel"], "")}))
            line += f" {per_weight_text(old)} | {per_weight_text(pw)} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


REPLACES = {"lut": "gemv", "gemv-tiles": "gemv"}  # a new kernel (path) beside what ran its case before


def per_weight_text(pw: dict | None) -> str:
    """instructions / barriers / shuffles / int->float conversions per weight, or a dash."""
    if not pw or pw.get("instructions") is None:
        return "–"
    return " / ".join(f"{pw.get(name, 0):.3g}" for name in ("instructions", "barriers", "shuffles", "int_to_float"))


def case_key(r: dict) -> str:
    return f"{r['kernel']} M={r['M']} k={r['k']} d={r['d']} x={r['x']} {r['shape']}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (H100/H200: 90)")
    p.add_argument("--shape", default="4096x4096", help="out_features x in_features of the layer")
    p.add_argument("--clock-ghz", type=float, default=1.98, help="SM clock for the issue bound (H200 boost: 1.98)")
    p.add_argument(
        "--cvt-per-clk",
        type=int,
        default=16,
        help="int->float conversions per clock per SM (CUDA guide, cc 9.0, 'all other type conversions': 16)",
    )
    p.add_argument("--hbm-gbs", type=float, default=4800.0, help="HBM peak for cuBLAS's M = 1 bound (H200: 4800)")
    p.add_argument("--out", default="benches/results/kernel_asm")
    p.add_argument("--name", default="kernel_asm", help="file name of the results (<name>.md, <name>.json)")
    p.add_argument(
        "--compare",
        default=None,
        help="an earlier <name>.json: its per-weight instructions, barriers, shuffles, conversions beside today's "
        "(a table-kernel row beside the GEMV row of its case)",
    )
    p.add_argument("--only", default=None, help="run only the cases whose description contains this text")
    args = p.parse_args(argv)
    out_features, in_features = (int(v) for v in args.shape.lower().split("x"))
    hw = {"sms": H200_SMS, "clock_ghz": args.clock_ghz, "cvt_per_clk": args.cvt_per_clk}
    before = None
    if args.compare:
        old = json.loads(Path(args.compare).read_text())
        before = {case_key(r): r.get("per_weight") or {} for r in old["rows"]}
    meta = {
        "arch": f"sm_{args.arch}",
        "triton": gpu_stack().triton.__version__,
        "shape": args.shape,
        "SMs": H200_SMS,
        "clock GHz": args.clock_ghz,
        "conversions/clk/SM": args.cvt_per_clk,
        "cublas_m1_gweights_s": args.hbm_gbs / 2,
        "date": time.strftime("%Y-%m-%d"),
        "git": git_revision(),
    }
    rows = []
    for kind, batch, k, d, x_name in CASES:
        row_name = f"{kind} M={batch} k={k} d={d} x={x_name}"
        if args.only and args.only not in row_name:
            continue
        row = measure(kind, batch, k, d, x_name, out_features, in_features, args.arch, hw)
        rows.append(row)
        pw = row.get("per_weight") or {}
        loop = row.get("sass_loop") or {}
        print(
            f"{row_name}: loop {loop.get('instructions')} instr, {loop.get('barriers')} BAR, "
            f"{loop.get('shuffles')} SHFL, {loop.get('int_to_float')} I2F, {loop.get('global_loads')} LDG; "
            f"{pw.get('instructions', float('nan')):.2f} instr/weight | {row['ptxas']}",
            flush=True,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(rows, meta, before)
    atomic_write_bytes(out / f"{args.name}.md", md.encode())
    atomic_write_bytes(out / f"{args.name}.json", json.dumps({"meta": meta, "rows": rows}, indent=1).encode())
    print(md)
    return 0


def git_revision() -> str:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())

"""RTL soak: >= 100,000 outputs of random ragged layers through the engine under random
backpressure on every stream, each compared bit for bit with reference.lookup_matmul_int.

    .venv/bin/python benches/rtl_soak.py [--outputs 100000] [--simulator icarus] [--lanes 2]
        [--backpressure 0.3] [--seed 11] [--out benches/results/rtl_soak]

Runs the same code as tests/test_rtl_soak.py (vq4all.hw.sim.soak) at full size. Writes
rtl_soak.json/.md (outputs, mismatches, cycles, seconds); exits 1 on any mismatch.
"""

import argparse
import json
import sys
from pathlib import Path

from vq4all.hw.sim.soak import soak
from vq4all.io import atomic_write_bytes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--outputs", type=int, default=100_000)
    p.add_argument("--simulator", default="icarus")
    p.add_argument("--lanes", type=int, default=2)
    p.add_argument("--backpressure", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "rtl_soak"))
    args = p.parse_args()
    result = soak(
        args.outputs, lanes=args.lanes, backpressure=args.backpressure, seed=args.seed, simulator=args.simulator
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "rtl_soak.json", (json.dumps(result, indent=2) + "\n").encode())
    rows = "\n".join(f"| {k} | {v} |" for k, v in result.items())
    atomic_write_bytes(out / "rtl_soak.md", f"# RTL soak\n\n| quantity | value |\n|---|---|\n{rows}\n".encode())
    print(json.dumps(result, indent=2))
    return 0 if result["mismatches"] == 0 and result["outputs"] == result["expected_outputs"] else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# The GPU check: what the lookup kernels do on a CUDA GPU, measured in the order that matters, in
# under 6 minutes, on a fresh machine with no network and no install of this repository.
#
#   bash benches/gpu_check.sh OUT_DIR            # on the GPU machine
#   bash benches/gpu_check.sh OUT_DIR --plan     # anywhere: the plan, the import check, the bench's
#                                                # measurement order and pytest's collection, no GPU
#                                                # (GPU_CHECK_DRY_RUN=1 does the same)
#
# Steps, in this order, each under `timeout` (seconds from the start; BUDGET = 330 in all):
#   1 env          GPU, driver, python/torch/triton versions, git revision -> env.txt      (<= 60)
#   2 import       `python -P -c 'import vq4all.kernels'` must load this tree's src/      (<= 60)
#   3 bench A      random 8-byte gather microbenchmark (global/L2 and shared memory, ~20 s),
#                  then the large shapes 4096x4096, 8192x8192, 4096x14336 at M = 1, 16, 256
#                  against cuBLAS fp16 in the same process                    (<= 170, cap inside)
#   4 pytest gpu   the `gpu` tests of the kernel test files only                          (<= 90)
#   5 bench B      a row per implementation for the large shapes (the table GEMV included), fused
#                  sibling layers (Q,K,V; gate,up) against separate launches, then the zoo and
#                  other LLM shapes                                            (the time left - 60)
#   6 pytest rest  the other tests of the kernel test files                         (the time left)
# Every bench row is written to bench_kernels.md/.json as soon as it is measured, so a cap or a
# timeout never loses finished rows. Python runs with -P (the repository root never lands on
# sys.path ahead of src/) and PYTHONPATH=src (no pip install needed: the import path is the
# folder path). Python: $PYTHON if set, else python3 when its torch sees a CUDA device and triton
# imports, else .venv/bin/python if that one does; nothing is installed (there is no network).
# pytest collects only tests/test_kernels*.py and tests/test_bench_kernels.py (other test files
# import packages a GPU image lacks, such as amaranth and cocotb); -k "not mtcnn" skips the
# tests that need facenet-pytorch (a zoo package).
# GPU_CHECK_DEVICE=cpu rehearses the real run on a CPU (tests of this script): the same steps,
# with the bench's tiny --quick rows (and tiny fused siblings) on the CPU instead of phases A
# and B; GPU_CHECK_BUDGET
# overrides the 330 s budget.
# Writes into OUT_DIR (6 files): env.txt, bench_kernels.md, bench_kernels.json, bench.log,
# pytest.log, gpu_check.log. Exit status: 0 when every step passed, 1 when one failed (the
# files say which), 2 for a usage error.
set -uo pipefail

usage="usage: bash benches/gpu_check.sh OUT_DIR [--plan]"
out="" plan="${GPU_CHECK_DRY_RUN:-0}"
for arg in "$@"; do
  case "$arg" in
    --plan) plan=1 ;;
    -h | --help) echo "$usage"; exit 0 ;;
    -*) echo "gpu_check: unknown option $arg; $usage" >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "gpu_check: one OUT_DIR only; $usage" >&2; exit 2; }; out="$arg" ;;
  esac
done
[ -n "$out" ] || { echo "gpu_check: no OUT_DIR given; $usage" >&2; exit 2; }
[ "$plan" = "0" ] || plan=1

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
mkdir -p "$out" || { echo "gpu_check: cannot create $out" >&2; exit 2; }
out="$(cd "$out" && pwd)"
start=$SECONDS
BUDGET="${GPU_CHECK_BUDGET:-330}" # seconds: the table and JSON are written well inside 6 minutes
case "$BUDGET" in '' | *[!0-9]*) echo "gpu_check: GPU_CHECK_BUDGET must be a number of seconds, got '$BUDGET'" >&2; exit 2 ;; esac
device="${GPU_CHECK_DEVICE:-cuda}"
case "$device" in cuda | cpu) ;; *) echo "gpu_check: GPU_CHECK_DEVICE must be cuda or cpu, got '$device'" >&2; exit 2 ;; esac
left() { echo $((BUDGET - (SECONDS - start))); }
min() { [ "$1" -lt "$2" ] && echo "$1" || echo "$2"; }
log="$out/gpu_check.log"
: >"$log"
say() { echo "[gpu_check] $*" | tee -a "$log"; }
status=0

PYTEST_ARGS=(-P -m pytest -q -p no:cacheprovider -k "not mtcnn")
BENCH_A=(--device cuda --phases gathers,large --gather-cap 25)
BENCH_B=(--device cuda --phases impls,fused,rest --append)
if [ "$device" = cpu ]; then # the rehearsal: tiny CPU rows in place of both phases
  BENCH_A=(--device cpu --quick --configs 2^16x8)
  BENCH_B=(--device cpu --quick --configs 256x4 --phases fused --append)
fi

usable() { # $1: python; $2: 1 = needs CUDA torch + triton
  "$1" -P -c 'import sys' >/dev/null 2>&1 || return 1 # -P: Python >= 3.11
  if [ "$2" = 1 ]; then
    "$1" -P -c 'import torch, triton; assert torch.cuda.is_available()' >/dev/null 2>&1
  else
    "$1" -P -c 'import torch' >/dev/null 2>&1
  fi
}
need_gpu=$((1 - plan))
[ "$device" = cuda ] || need_gpu=0
py="${PYTHON:-}"
if [ -n "$py" ]; then
  usable "$py" "$need_gpu" || { say "PYTHON=$py: needs Python >= 3.11 with torch$([ $need_gpu = 1 ] && echo ' seeing a CUDA device, and triton')"; exit 1; }
else
  for candidate in python3 "$root/.venv/bin/python"; do
    if command -v "$candidate" >/dev/null 2>&1 && usable "$candidate" "$need_gpu"; then
      py="$candidate"
      break
    fi
  done
  [ -n "$py" ] || { say "no Python >= 3.11 with torch$([ $need_gpu = 1 ] && echo ' seeing a CUDA device, and triton') (python3, .venv/bin/python); set PYTHON"; exit 1; }
fi

cd "$root" || exit 1
# the selection pytest collects (also what --plan shows collected); globbed here, in the root
SELECTION=(tests/test_kernels*.py tests/test_bench_kernels.py)
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export VQ4ALL_CACHE="${VQ4ALL_CACHE:-$scratch/cache}" TRITON_DEFAULT_FP_FUSION="${TRITON_DEFAULT_FP_FUSION:-1}"
unset TRITON_INTERPRET

say "python: $py; budget $BUDGET s; device $device; out $out"
say "plan: 1 env (<= 60 s) -> env.txt"
say "plan: 2 import check: python -P -c 'import vq4all.kernels' from $root/src (<= 60 s)"
say "plan: 3 bench A: ${BENCH_A[*]} (<= 170 s): gathers microbenchmark, then the large shapes"
say "plan: 4 pytest gpu: -m gpu ${SELECTION[*]} (<= 90 s)"
say "plan: 5 bench B: ${BENCH_B[*]} (the time left - 60 s)"
say "plan: 6 pytest rest: -m 'not gpu' ${SELECTION[*]} (the time left - 5 s)"

# 2 first in the log, since everything else depends on it; it is cheap
where="$(timeout 60 "$py" -P -c 'import vq4all.kernels, os; print(os.path.dirname(os.path.dirname(os.path.realpath(vq4all.kernels.__file__))))' 2>>"$log")"
if [ "$where" != "$root/src/vq4all" ]; then
  say "import check FAILED: vq4all.kernels comes from '${where:-nowhere}', not $root/src/vq4all"
  exit 1
fi
say "import check: vq4all.kernels from $where/kernels"

if [ "$plan" = 1 ]; then
  say "dry run: the bench's measurements in run order (A then B), then pytest's collection"
  { "$py" -P benches/bench_kernels.py "${BENCH_A[@]}" --plan && "$py" -P benches/bench_kernels.py "${BENCH_B[@]}" --plan; } |
    sed 's/^/[gpu_check] bench: /' | tee -a "$log"
  timeout 120 "$py" "${PYTEST_ARGS[@]}" --collect-only "${SELECTION[@]}" 2>&1 | sed 's/^/[gpu_check] pytest: /' | tee -a "$log"
  say "dry run done in $((SECONDS - start)) s"
  exit 0
fi

# 1 env
{
  echo "date: $(date -u +%FT%TZ)"
  echo "git: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "python: $py ($("$py" -P -c 'import sys; print(sys.version.split()[0])'))"
  if [ "$device" = cuda ]; then
    timeout 60 "$py" -P -c 'import torch, triton; p = torch.cuda.get_device_properties(0); print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__); print("device", p.name, p.multi_processor_count, "SMs", round(p.total_memory / 2**30), "GiB")'
  else
    timeout 60 "$py" -P -c 'import torch; print("torch", torch.__version__, "(CPU rehearsal)")'
  fi
  python_cupy="$(timeout 30 "$py" -P -c 'import cupy; print(cupy.__version__)' 2>/dev/null || echo 'not importable (the CUDA C gather rows will say so)')"
  echo "cupy: $python_cupy"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
} >"$out/env.txt" 2>&1
cat "$out/env.txt" | tee -a "$log"

# 3 bench A: gathers, then the large shapes
cap=$(min 170 $(($(left) - 130)))
say "3 bench A, time cap ${cap} s ($(left) s left)"
: >"$out/bench.log"
timeout -k 5 $((cap + 20)) "$py" -P benches/bench_kernels.py "${BENCH_A[@]}" --time-cap "$cap" --out "$out" \
  >>"$out/bench.log" 2>&1
rc=$?
tail -n 8 "$out/bench.log" | tee -a "$log"
[ $rc -eq 0 ] || { say "bench A: exit status $rc (see bench.log)"; status=1; }

# 4 pytest: the gpu tests of the kernel test files
limit=$(min 90 $(($(left) - 60)))
: >"$out/pytest.log"
if [ "$limit" -gt 15 ]; then
  say "4 pytest -m gpu, limit ${limit} s"
  timeout -k 5 "$limit" "$py" "${PYTEST_ARGS[@]}" -m gpu "${SELECTION[@]}" >>"$out/pytest.log" 2>&1
  rc=$?
  tail -n 15 "$out/pytest.log" | tee -a "$log"
  [ $rc -eq 0 ] || { say "pytest -m gpu: exit status $rc (see pytest.log)"; status=1; }
else
  say "4 no time left for pytest -m gpu"; status=1
fi

# 5 bench B: the rest of the shapes, then one row per implementation
cap=$(($(left) - 60))
if [ "$cap" -gt 20 ]; then
  say "5 bench B, time cap ${cap} s"
  timeout -k 5 $((cap + 20)) "$py" -P benches/bench_kernels.py "${BENCH_B[@]}" --time-cap "$cap" --out "$out" \
    >>"$out/bench.log" 2>&1 || say "bench B stopped early (see bench.log)"
  tail -n 4 "$out/bench.log" | tee -a "$log"
fi

# 6 pytest: the other tests of the kernel test files, with what is left
limit=$(($(left) - 5))
if [ "$limit" -gt 15 ]; then
  say "6 pytest -m 'not gpu', limit ${limit} s"
  echo "----- pytest -m 'not gpu'" >>"$out/pytest.log"
  timeout -k 5 "$limit" "$py" "${PYTEST_ARGS[@]}" -m "not gpu" "${SELECTION[@]}" >>"$out/pytest.log" 2>&1
  rc=$?
  case $rc in
    0) ;;
    124 | 137) say "pytest -m 'not gpu': out of time (see pytest.log)" ;;
    *) say "pytest -m 'not gpu': exit status $rc (see pytest.log)"; status=1 ;;
  esac
  tail -n 5 "$out/pytest.log" | tee -a "$log"
fi
say "done in $((SECONDS - start)) s, results in $out (status $status)"
exit $status

#!/usr/bin/env bash
# The GPU check: the `gpu` tests and the lookup-kernel benchmark, on a machine with a CUDA GPU.
#
#   bash benches/gpu_check.sh OUT_DIR
#
# Finishes in under 8 minutes (each step has its own time limit). Works offline: it never
# installs into the machine's Python. Python: $PYTHON if set; else python3 when its torch sees
# a CUDA device and triton imports (e.g. a CUDA image with PyTorch); else it makes .venv-gpu
# with pip (network needed) holding torch, triton and the test dependencies. vq4all itself is
# imported from this tree's src/ on PYTHONPATH (no install). Writes into OUT_DIR:
#   env.txt            GPU, driver, python/torch/triton versions, git revision
#   pytest_gpu.log     pytest -m gpu over tests/
#   bench_kernels.md   the benchmark table (+ bench_kernels.json), bench.log its output
#   impls/             a second, small sweep with a row per implementation (when time is left)
# Exit status: 0 when the tests passed and the benchmark ran, else 1 (the files still say why).
set -uo pipefail
out="${1:?usage: bash benches/gpu_check.sh OUT_DIR}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
start=$SECONDS
budget=460  # seconds: 8 minutes less a margin for the last step's cleanup
left() { echo $((budget - (SECONDS - start))); }
status=0

have_gpu_stack() { "$1" -c 'import torch, triton; assert torch.cuda.is_available()' >/dev/null 2>&1; }
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if have_gpu_stack python3; then
    py=python3
  else
    echo "[gpu_check] python3 has no CUDA torch + triton: making $root/.venv-gpu (needs the network)" >&2
    [ -x "$root/.venv-gpu/bin/python" ] || python3 -m venv "$root/.venv-gpu"
    "$root/.venv-gpu/bin/python" -m pip install -q --disable-pip-version-check \
      torch triton numpy scipy safetensors tqdm pytest scikit-learn || { echo "[gpu_check] pip failed" >&2; exit 1; }
    py="$root/.venv-gpu/bin/python"
  fi
fi
if ! have_gpu_stack "$py"; then
  echo "[gpu_check] $py: torch sees no CUDA device or triton is missing" >&2
  exit 1
fi

# vq4all importable without pip: src/ is the package root (the import path is the folder path).
site="$(mktemp -d)"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export VQ4ALL_CACHE="${VQ4ALL_CACHE:-$site/cache}"
unset TRITON_INTERPRET

{
  echo "date: $(date -u +%FT%TZ)"
  echo "git: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "python: $py ($("$py" -c 'import sys; print(sys.version.split()[0])'))"
  "$py" -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__); print("device", torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).multi_processor_count, "SMs")'
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

cd "$root"
echo "[gpu_check] pytest -m gpu ($(left) s left)"
timeout 200 "$py" -m pytest -m gpu -q -p no:cacheprovider --continue-on-collection-errors tests \
  > "$out/pytest_gpu.log" 2>&1
rc=$?
tail -n 25 "$out/pytest_gpu.log"
[ $rc -eq 0 ] || { echo "[gpu_check] gpu tests: exit status $rc (see pytest_gpu.log)"; status=1; }

cap=$(( $(left) - 120 ))
[ $cap -gt 240 ] && cap=240
if [ $cap -gt 30 ]; then
  echo "[gpu_check] benchmark, time cap ${cap} s"
  timeout $((cap + 60)) "$py" benches/bench_kernels.py --device cuda --time-cap "$cap" --out "$out" > "$out/bench.log" 2>&1
  rc=$?
  tail -n 5 "$out/bench.log"
  [ $rc -eq 0 ] || { echo "[gpu_check] benchmark: exit status $rc (see bench.log)"; status=1; }
else
  echo "[gpu_check] no time left for the benchmark"; status=1
fi

cap=$(( $(left) - 45 ))
if [ $cap -gt 30 ]; then
  echo "[gpu_check] per-implementation sweep, time cap ${cap} s"
  mkdir -p "$out/impls"
  timeout $((cap + 30)) "$py" benches/bench_kernels.py --device cuda --all-impls --shapes llm --batches 1,4,16,256,1024 \
    --configs 2^16x8 --reps 10 --time-cap "$cap" --out "$out/impls" > "$out/impls/bench.log" 2>&1 \
    || echo "[gpu_check] per-implementation sweep stopped early (see impls/bench.log)"
fi
rm -rf "$site"
echo "[gpu_check] done in $((SECONDS - start)) s, results in $out (status $status)"
exit $status

#!/usr/bin/env bash
# GPU check: the engine tests on CUDA (and training streamed from a memmap), the demo on CUDA,
# calibrate on CUDA against the CPU, the speed benchmark on CUDA, and the same pretraining speed
# with torch.compile (ours compile=True against EEGClassifier compile=True). Prepared commands for
# the GPU machine (it lacks mne, braindecode, moabb, skorch and pyriemann, and has no package
# index):
#
#   bash ../shared/tools/device-pack.sh               # here, after `make install`: fills .device-pack/
#   run(command="source .device-pack/setup.sh && bash benchmarks/gpu_check.sh $OUT",
#       carry=[".device-pack"], timeout_s=600)
#   run(command="source .device-pack/setup.sh && GPU_CHECK_STEPS=speed_compile bash benchmarks/gpu_check.sh $OUT",
#       carry=[".device-pack"], timeout_s=330)
#
# Then copy the small result files from OUT to benchmarks/results/gpu/ and commit them.
# Every step has its own time limit. GPU_CHECK_STEPS (default "test_engine demo calibrate speed")
# names the steps to run: the first call's steps end within about 10 minutes, speed_compile
# (compilation included, 4 data/model pairs x 2 frameworks) within 5.
set -u
OUT="${1:?usage: gpu_check.sh OUTDIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
LOG="$OUT/gpu_check.log"
START=$(date +%s)
say() { echo "[gpu_check $(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
status=0
STEPS=" ${GPU_CHECK_STEPS:-test_engine demo calibrate speed} "
want() { [[ "$STEPS" == *" $1 "* ]]; }
step() {  # step NAME SECONDS CMD...: run with a time limit, output to OUT/NAME.txt
  local name=$1 limit=$2; shift 2
  say "$name"
  timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1 || { say "$name FAILED or timed out (see $name.txt)"; status=1; }
  tail -n 3 "$OUT/$name.txt" | tee -a "$LOG"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/nvidia-smi.csv" 2>&1 || true
"$PY" -m eegtransfer.sysinfo --check | tee -a "$LOG" || { say "FAILED: the stack does not import"; exit 1; }
"$PY" -m eegtransfer.sysinfo >"$OUT/versions.txt" 2>&1
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  say "FAILED: no CUDA device visible to torch"; exit 1
fi
if [ ! -d "${MNE_DATA:-/nonexistent}/MNE-ssvepexo-data" ]; then
  say "FAILED: MNE_DATA='${MNE_DATA:-}' holds no Kalunga2016 cache (source .device-pack/setup.sh first)"; exit 1
fi

want test_engine && step test_engine 150 "$PY" -m pytest -q -p no:cacheprovider -m "not slow" tests/test_engine.py \
  tests/test_compile.py tests/test_trialcache.py::test_streamed_cuda_batches_match_pinned_host_batches
want demo && step demo_cuda 150 "$PY" -m eegtransfer.cli demo --device cuda --json --quiet --out /tmp/gpu-demo --overwrite
POP=/tmp/gpu-demo/population
if want calibrate && [ -d "$POP" ]; then
  step calibrate_cuda 90 "$PY" benchmarks/calibrate_time.py --bundle "$POP" --device cuda --out "$OUT/calibrate_time_cuda.md"
  step calibrate_cpu 90 "$PY" benchmarks/calibrate_time.py --bundle "$POP" --device cpu --out "$OUT/calibrate_time_cpu.md"
fi
want speed && step speed_cuda 150 "$PY" benchmarks/speed.py --device cuda --threads auto --epochs 3 --bnci-epochs 2 \
  --no-compile --out "$OUT/speed"
# compiled variants: pretraining only; speed.md is rewritten after each data/model pair, so a time
# limit still leaves the pairs done
want speed_compile && step speed_compile_cuda 300 "$PY" benchmarks/speed.py --device cuda --threads auto --epochs 3 \
  --bnci-epochs 2 --pretrain-only --out "$OUT/speed_compile"
say "done (status $status); results in $OUT"
exit $status

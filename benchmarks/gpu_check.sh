#!/usr/bin/env bash
# GPU check for eegtransfer: the speed benchmark on CUDA and a short Kalunga2016 LOSO run.
#
#   bash benchmarks/gpu_check.sh OUTDIR
#
# Uses the current python when the project's dependencies import, otherwise makes
# a venv and installs the project (`pip install -e .[test]`; needs a package index
# or a wheel cache). MNE_DATA is taken from the environment: without the
# Kalunga2016 cache the Kalunga parts are skipped with a message. Each step has a
# time limit so that the whole script ends within 8 minutes.
set -u
OUT="${1:?usage: gpu_check.sh OUTDIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
LOG="$OUT/gpu_check.log"
START=$(date +%s)
say() { echo "[gpu_check $(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in .venv/bin/python python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import torch, braindecode, skorch, eegtransfer" 2>/dev/null; then
      PY="$cand"; break
    fi
  done
fi
if [ -z "$PY" ]; then
  say "dependencies do not import: creating $OUT/venv and installing the project"
  python3 -m venv "$OUT/venv" && "$OUT/venv/bin/python" -m pip install -q -e ".[test]" >>"$LOG" 2>&1 \
    || { say "FAILED: pip install -e .[test] (no network or wheel cache?)"; exit 1; }
  PY="$OUT/venv/bin/python"
fi
say "python: $PY"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/nvidia-smi.csv" 2>&1 || true
"$PY" - <<'PYEOF' 2>&1 | tee -a "$LOG"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), "bf16", torch.cuda.is_bf16_supported())
PYEOF
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  say "FAILED: no CUDA device visible to torch"; exit 1
fi

MNE="${MNE_DATA:-}"
if [ -n "$MNE" ] && [ -d "$MNE/MNE-ssvepexo-data" ]; then
  HAVE_KAL=1; say "Kalunga2016 cache: $MNE"
else
  HAVE_KAL=0
  say "Kalunga2016 cache absent (MNE_DATA='${MNE}'): Kalunga parts skipped; the BNCI-shaped synthetic benchmark still runs"
  # point MNE_DATA at an empty folder so nothing tries to download
  export MNE_DATA="$OUT/no_mne_data"; mkdir -p "$MNE_DATA"
fi

status=0
say "engine tests on CUDA (pinned-host batching vs on-device)"
timeout 90 "$PY" -m pytest -q tests/test_engine.py >"$OUT/test_engine.txt" 2>&1 || { say "test_engine FAILED (see test_engine.txt)"; status=1; }
tail -n 3 "$OUT/test_engine.txt" | tee -a "$LOG"

say "speed benchmark on CUDA"
timeout 270 "$PY" benchmarks/speed.py --device cuda --threads auto --epochs 3 --bnci-epochs 3 \
  --out "$OUT/speed" >"$OUT/speed.log" 2>&1 || { say "speed benchmark FAILED or timed out (see speed.log)"; status=1; }

if [ "$HAVE_KAL" = 1 ]; then
  if [ -f benchmarks/loso.py ]; then
    say "Kalunga2016 leave-one-subject-out (quick) on CUDA"
    timeout 150 "$PY" benchmarks/loso.py --quick --device cuda --out "$OUT/loso" >"$OUT/loso.log" 2>&1 \
      || { say "loso FAILED or timed out (see loso.log)"; status=1; }
  else
    say "benchmarks/loso.py not found: LOSO run skipped"
  fi
else
  say "LOSO skipped: needs the Kalunga2016 cache"
fi
say "done (status $status); results in $OUT"
exit $status

#!/usr/bin/env bash
# The negative-transfer finding of the accuracy issue, replayed through the command line as a user
# would: a population of subjects 2 4 5 6 8 9 10 11 with every default, then subject 1 calibrated on
# its first 2 minutes (run 1 and run 2 laid end to end; the rest of both runs is held out) with each
# strategy. Writes benchmarks/results/subject1_cli.md (held-out accuracy per strategy).
#
#   MNE_DATA=/path/to/mne_data bash benchmarks/subject1_cli.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-$(mktemp -d)}"
K="$MNE_DATA/MNE-ssvepexo-data/zenodo/2392979"
OUT=benchmarks/results/subject1_cli.md
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
start=$(date +%s)
[ -d "$WORK/population" ] || eegtransfer pretrain --dataset Kalunga2016 --subjects 2 4 5 6 8 9 10 11 \
    --out "$WORK/population" --quiet --device cpu
[ -d "$WORK/population-aligned" ] || eegtransfer pretrain --dataset Kalunga2016 --subjects 2 4 5 6 8 9 10 11 \
    --align --out "$WORK/population-aligned" --quiet --device cpu
{
  echo "# Subject 1, 2 minutes of calibration, through \`eegtransfer calibrate\`"
  echo
  echo "Command: \`bash benchmarks/subject1_cli.sh\` (CPU, OMP_NUM_THREADS=$OMP_NUM_THREADS). Population:"
  echo "\`eegtransfer pretrain --dataset Kalunga2016 --subjects 2 4 5 6 8 9 10 11\` with every default;"
  echo "patient: \`eegtransfer calibrate --model population --recording subject01_run1_raw.fif"
  echo "--recording subject01_run2_raw.fif --minutes 2 --strategy S\`; held out: every later trial of both runs."
  echo "The issue reported, before this round: zero-shot 0.562, bn 0.708, head 0.500, align+head 0.396, auto 0.500."
  echo "The aligned population is the same command with \`--align\`."
  echo
  echo "| population | strategy | held-out accuracy | n held out | calibration trials | what was kept |"
  echo "|---|---|---|---|---|---|"
} > "$OUT.tmp"
for run in population:none population:bn population:head population:cca population:bn+cca population:head+cca \
           population:auto population-aligned:align population-aligned:align+head population-aligned:align+cca \
           population-aligned:auto; do
  pop="${run%%:*}"; s="${run#*:}"
  eegtransfer calibrate --model "$WORK/$pop" --recording "$K/subject01_run1_raw.fif" \
      --recording "$K/subject01_run2_raw.fif" --minutes 2 --strategy "$s" --out "$WORK/patient-$pop-$s" \
      --json --quiet --device cpu --overwrite > "$WORK/$pop-$s.json"
  python - "$WORK/$pop-$s.json" "$pop" "$s" >> "$OUT.tmp" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
kept = r["chosen"] or r["guard"]
print(f"| {sys.argv[2].replace('population-', '')} | {sys.argv[3]} | {r['heldout_accuracy']:.3f} "
      f"| {r['n_heldout_trials']} | {r['n_calibration_trials']} | {kept} |")
EOF
done
echo >> "$OUT.tmp"
echo "Wall time $(( $(date +%s) - start )) s." >> "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"

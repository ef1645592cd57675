#!/usr/bin/env bash
# GPU readiness check (about 6-10 minutes on one H100): run from anywhere, bash tools/gpu_check.sh
#   1. the device and the project's own precision policy (hrnet.runtime.device, not is_bf16_supported())
#   2. tests/test_cuda.py (tests needing ../shared/data/real-hands skip with a reason when it is absent)
#   3. per precision the card computes natively (fp32, bf16, fp16 + GradScaler): a Lookahead(Adam) run
#      SIGKILLed after epoch 2, resumed, and compared with an uninterrupted run
#   4. DDP over every visible GPU (skipped with one): per-rank hashes of weights, slow weights, optimizer state
#   5. one epoch slice of the user's setting (HRNet-W18, 256 px, batch 32): images/s, data wait, peak memory
#   6. benchmark train-step, Lookahead(Adam), in training's backend settings (cudnn autotuner on, TF32 off)
# Every section runs whatever the others did; the summary at the end lists PASS / FAIL / SKIP.
# Exit status: 0 when nothing failed, 1 otherwise. OUT (default /tmp/gpu_check) keeps the logs and runs.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
LOOKAHEAD=experiments/hand_lookahead_adam.yaml
declare -a SUMMARY=()

# section NAME LIMIT_S CMD...: runs CMD under a time limit, its output shown and kept in $OUT/NAME.log;
# exit 0 = PASS, 77 = SKIP, anything else (124 = timed out) = FAIL.
section() {
  local name=$1 limit=$2
  shift 2
  echo
  echo "== $name"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  local verdict=FAIL
  if [ "$rc" -eq 0 ]; then verdict=PASS; elif [ "$rc" -eq 77 ]; then verdict=SKIP; fi
  SUMMARY+=("$(printf '%-4s %-28s %4ds  (exit %d, log %s)' "$verdict" "$name" $((SECONDS - t0)) "$rc" "$OUT/$name.log")")
}

section device 60 bash -c "nvidia-smi && $PY tools/gpu_check.py policy --device cuda --out '$OUT'"
PRECISIONS=$(sed -n 's/^precisions: //p' "$OUT/device.log")
PRECISIONS=${PRECISIONS:-fp32}

# (its CPU runs of tools/gpu_check.py are left out: this script runs those checks on CUDA below)
section cuda-tests 240 $PY -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py -k "not gpu_check"

for amp in $PRECISIONS; do
  section "kill-resume-$amp" 150 $PY tools/gpu_check.py resume --device cuda --amp "$amp" --out "$OUT"
done

section ddp-all-gpus 180 $PY tools/gpu_check.py ddp --device cuda --out "$OUT"

section epoch-slice-w18-256-b32 240 $PY tools/gpu_check.py epoch-slice --device cuda --iters 60 --out "$OUT"

for amp in $PRECISIONS; do
  section "benchmark-lookahead-$amp" 120 $PY tools/benchmark.py train-step --cfg "$LOOKAHEAD" --amp "$amp" \
    --steps 30 --warmup 5 MODEL.NAME hrnet_w18 MODEL.IMAGE_SIZE "[256,256]" MODEL.HEATMAP_SIZE "[64,64]" \
    TRAIN.BATCH_SIZE_PER_GPU 32 DEVICE cuda
done

echo
echo "== summary"
failed=0
for line in "${SUMMARY[@]}"; do
  echo "$line"
  case $line in FAIL*) failed=1 ;; esac
done
exit $failed

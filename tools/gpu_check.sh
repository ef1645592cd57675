#!/usr/bin/env bash
# GPU readiness check: the CUDA tests, then HRNet-W18 train-step throughput (256x256, batch 32) in
# fp32 and bf16, then the one-process data pipeline. Run from anywhere: bash tools/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

echo "== nvidia-smi"
nvidia-smi
$PY -c "import torch; assert torch.cuda.is_available(), 'CUDA is not available to torch'; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())"

echo "== tests/test_cuda.py"
$PY -m pytest -q -rs tests/test_cuda.py

W18=(MODEL.NAME hrnet_w18 MODEL.IMAGE_SIZE "[256,256]" MODEL.HEATMAP_SIZE "[64,64]" TRAIN.BATCH_SIZE_PER_GPU 32 DEVICE cuda)
for amp in fp32 bf16; do
  echo "== train-step HRNet-W18 256x256 batch 32, $amp"
  $PY tools/benchmark.py train-step --json --amp "$amp" --steps 30 --warmup 5 "${W18[@]}" | tee "/tmp/gpu_check_train_$amp.json"
  $PY -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"$amp: {r['images_per_s']:.0f} images/s\" + (f\" ({r['speedup_vs_fp32']}x fp32, interleaved)\" if 'speedup_vs_fp32' in r else ''))" "/tmp/gpu_check_train_$amp.json"
done

echo "== data pipeline (one process, one thread; DATA_CFG=${DATA_CFG:-experiments/quickstart_cpu.yaml})"
$PY tools/benchmark.py data --json --compare --steps 500 --cfg "${DATA_CFG:-experiments/quickstart_cpu.yaml}"

#!/usr/bin/env bash
# The runs that need a GPU (issues #4 and #6), in parts that each fit the device machine's
# 10-minute limit per call. The GPU image has torch but lacks some of mmbench's dependencies,
# and ../shared does not travel: `prepare` (on the CPU machine) fetches the wheels into .whl/
# and copies the COCO images into .data/ (both git-ignored); every other part runs on the GPU
# machine with `carry: [".whl"]` (plus ".data" for `other`):
#
#   benchmarks/gpu_session.sh prepare                        # here, once
#   bash benchmarks/gpu_session.sh train concat              # device call 1 (then attention, gnn)
#   bash benchmarks/gpu_session.sh other                     # retrieval at scale, metrics, nvJPEG
#   bash benchmarks/gpu_session.sh paths                     # CUDA tests + `mmbench train` on cuda
#
# Results land in $OUT (the device tool's output folder) or ./gpu-results.
set -euo pipefail
part=${1:?usage: benchmarks/gpu_session.sh prepare | train FUSION | other | paths}
out=${OUT:-gpu-results}

setup() {  # on the GPU machine: the carried wheels, without touching its torch
  mkdir -p "$out"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/*.whl
  export PYTHONPATH=$PWD/.site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" || true
  python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"
}

case $part in
  prepare)
    ../shared/tools/gpu-wheels.sh pydantic soundfile pycocotools mlxtend hypothesis pytest-timeout
    mkdir -p .data/coco && cp -r ../shared/data/coco/val2017 .data/coco/
    du -sh .whl .data ;;
  train)
    fusion=${2:?train needs a fusion: concat, attention or gnn}
    setup
    python3 -m benchmarks --device cuda --cases training --fusions "$fusion" --out "$out/training-$fusion.json" \
      2>&1 | tee "$out/training-$fusion.log" ;;
  other)
    setup
    python3 -m benchmarks --device cuda --cases retrieval,classification,decoding --data-dir .data \
      --out "$out/other.json" 2>&1 | tee "$out/other.log" ;;
  paths)
    setup
    python3 -m pytest -q -p no:cacheprovider tests/test_training.py tests/test_multiseed.py tests/test_cnn_fast_paths.py \
      tests/test_benchmarks_smoke.py 2>&1 | tail -5 | tee "$out/tests.log"
    for fusion in concat attention; do  # bf16 autocast, data on the device; then torch.compile
      python3 -m mmbench.cli train synthetic-synergy --fusion "$fusion" --device cuda --epochs 5 --out "$out/runs" \
        --no-progress 2>&1 | tee -a "$out/train.log"
      python3 -m mmbench.cli train synthetic-synergy --fusion "$fusion" --device cuda --epochs 5 --compile \
        --out "$out/runs-compiled" --no-progress 2>&1 | tee -a "$out/train.log"
    done
    # DDP with the nccl backend (one process per GPU; one GPU here)
    torchrun --nproc_per_node 1 -m mmbench.cli train synthetic-synergy --fusion concat --device cuda --epochs 3 \
      --out "$out/runs-ddp" --no-progress 2>&1 | tail -3 | tee -a "$out/train.log" ;;
  *)
    echo "unknown part: $part" >&2; exit 2 ;;
esac

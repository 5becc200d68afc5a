#!/usr/bin/env bash
# The GPU figures in benchmarks/README.md, in one go (about 9 minutes at most on one H100/H200):
#   bash benchmarks/gpu.sh [OUT_DIR]
# Each step has its own time limit and a failing step does not stop the others; logs and JSON go to OUT_DIR.
set -u
out=${1:-benchmarks/results/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== $name ($(date +%T), limit ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log" | grep -v -E "^\s*$|Warning|warn\(" | tail -40
    echo "=== $name rc=${PIPESTATUS[0]}"
}
nvidia-smi -L
python3 -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__)"
# the sensor, batched vs a per-sample loop, and its geometry in float64 (default) vs float32
step glimpse 60 python3 -m benchmarks.glimpse --device=cuda --repeats=20
step glimpse200 40 python3 -m benchmarks.glimpse --device=cuda --repeats=20 --image=200
# every preset's training step in bf16 mixed precision (the command)
step throughput_bf16 220 python3 -m benchmarks.throughput --accelerator=gpu --precision=bf16-mixed \
    --json="$out/throughput_bf16.json"
# PHAM's three phases at the paper's sizes
step pham_phases 80 python3 -m benchmarks.pham_phases --config=configs/pham_svhn.yaml --sizes=32 --steps=10 \
    --warmup=3 --repeats=2 --accelerator=gpu --json="$out/pham_phases.json"
# the same presets in float32, for the bf16 speed-up
step throughput_fp32 60 python3 -m benchmarks.throughput --accelerator=gpu --precision=32-true \
    --only=dham_mnist120,ram_mnist,ram_cluttered100,pham_svhn,han_vqa --json="$out/throughput_fp32.json"
# RAM at batch 128, eager and compiled
step compile_ram128 90 python3 -m benchmarks.throughput --accelerator=gpu --precision=32-true --compile \
    --only=ram_mnist --batch_size=128 --json="$out/compile_ram128.json"

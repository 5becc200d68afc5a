#!/bin/bash
# Multi-node training without SLURM: start this script once on every node. torchrun starts one process per GPU
# and sets RANK/LOCAL_RANK/WORLD_SIZE, which Lightning's DDP strategy reads.
#
#   # on node 0 (the rendezvous host) and on node 1, with the same MASTER_ADDR:
#   NNODES=2 NODE_RANK=0 GPUS=8 MASTER_ADDR=10.0.0.1 bash scripts/torchrun_multinode.sh configs/pham_cifar10.yaml
#   NNODES=2 NODE_RANK=1 GPUS=8 MASTER_ADDR=10.0.0.1 bash scripts/torchrun_multinode.sh configs/pham_cifar10.yaml
set -euo pipefail
CONFIG=${1:-configs/dham_mnist120.yaml}
shift || true
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
GPUS=${GPUS:-$(nvidia-smi -L | wc -l)}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}

torchrun --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$GPUS" \
  --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
  cli.py fit --config="$CONFIG" --accelerator=gpu --devices="$GPUS" --num_nodes="$NNODES" --strategy=ddp \
  --precision=bf16-mixed "$@"

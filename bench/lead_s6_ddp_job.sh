#!/usr/bin/env bash
# Lead, session 6: config/paper.yaml's pretraining job under DDP on 2 GPUs (NCCL), device calls on
# nvidia-h200-x2 (OUT = the device's output folder; .engA_gpu carried: VQ-512 tokens + tokenizer).
#   call 1 (CALL=1): 2 GPUs, micro-batch 128 x 2, the job as configured + deterministic kill/resume;
#   call 2 (CALL=2): the job on 1 GPU and on 2 GPUs at micro-batch 256, no accumulation (the bench's
#   step). The call as run also timed, on 1 GPU, a pinned-memory host->GPU copy of the batcher's inputs
#   against the pageable one (--input-copy-ab, a temporary patch): no gain, so both are gone.
set -u
export PYTHONPATH=src CUBLAS_WORKSPACE_CONFIG=:4096:8
nvidia-smi -L > "$OUT/ddp_env.txt" 2>&1
CHECK="bench/pretrain_ddp_gpu_check.py --tokens .engA_gpu/tokens/vq512 --tokenizer .engA_gpu/tokenizers/vq512"
if [ "${CALL:-1}" = 1 ]; then
  timeout 290 torchrun --standalone --nproc-per-node=2 $CHECK --work /tmp/ddpcheck \
      --out "$OUT/pretrain_ddp_check.json" > "$OUT/pretrain_ddp_check_log.txt" 2>&1
  echo "ddp check rc=$?" >> "$OUT/ddp_env.txt"
else
  timeout 150 torchrun --standalone --nproc-per-node=1 $CHECK --work /tmp/c1 --micro-batch 256 --accum 1 \
      --steps 40 --no-resume --out "$OUT/pretrain_job_1gpu_copy_ab.json" > "$OUT/pretrain_job_1gpu_log.txt" 2>&1
  echo "1 gpu rc=$?" >> "$OUT/ddp_env.txt"
  timeout 120 torchrun --standalone --nproc-per-node=2 $CHECK --work /tmp/c2 --micro-batch 256 --accum 1 \
      --steps 40 --no-resume --out "$OUT/pretrain_job_2gpu.json" > "$OUT/pretrain_job_2gpu_log.txt" 2>&1
  echo "2 gpu rc=$?" >> "$OUT/ddp_env.txt"
fi

#!/usr/bin/env bash
# Lead's GPU check of session 5 (one device call; OUT = the device's output folder):
#  1. graphed resume == uninterrupted, bitwise, with paper.yaml's fused ops, under torch's
#     deterministic algorithms (tests/test_pretrain_graph_resume.py; the cases helper C's call did
#     not reach) + TrainStep's CUDA tests (graph == eager)
#  2. LoRA on a backbone saved with the fused ops == on the plain backbone, on CUDA (Triton kernels)
#  3. vqdna pretrain's training function end to end with paper.yaml's fused ops + cuda_graphs
set -u
export PYTHONPATH=src
nvidia-smi -L > "$OUT/env.txt" 2>&1
python3 -c "import torch, triton; print(torch.__version__, triton.__version__)" >> "$OUT/env.txt" 2>&1
CUBLAS_WORKSPACE_CONFIG=:4096:8 VQDNA_GPU_BERT_BASE=1 timeout 240 python3 -m pytest -q -rA \
    tests/test_pretrain_graph_resume.py tests/test_pretrain_train_step.py -k "cuda or graph" > "$OUT/graph_tests_log.txt" 2>&1
echo "graph tests rc=$?" >> "$OUT/env.txt"
timeout 90 python3 -m pytest -q -rA tests/test_finetune_lora_fused.py > "$OUT/lora_fused_log.txt" 2>&1
echo "lora tests rc=$?" >> "$OUT/env.txt"
timeout 150 python3 bench/pretrain_s4_smoke.py --tokens .engA_gpu/tokens/vq512 --tokenizer .engA_gpu/tokenizers/vq512 \
    --steps 20 --out "$OUT/pretrain_smoke.json" > "$OUT/pretrain_smoke_log.txt" 2>&1
echo "smoke rc=$?" >> "$OUT/env.txt"

#!/usr/bin/env bash
# The lead's session-4 GPU call (one H200): issue #3's training step with the bf16x3 nearest-code
# search and the Triton conv+LN backward, VQ and HRQ, a bench-size VQ run on that path (held-out
# reconstruction), fast encoding; then `vqdna pretrain`'s graphed step end to end (issue #4), and the
# CUDA tests of this session's kernels. Needs carry: results/bench_tok_shards, .engA_gpu.
set -u
export PYTHONPATH=src
timeout 330 python3 bench/tokenizer_bench.py --shards results/bench_tok_shards --budget-s 280 \
    --train-variants vq_x3,vq_fused,hrq_x3,hrq_fused --encode-kinds vq,hrq --encode-variants fast \
    --encode-batches 2048 --run-kind vq --run-variant vq_x3 --run-compile --run-seconds 40 \
    --out "$OUT/tokenizer_bench_h200_s4.json" > "$OUT/tokenizer_bench_h200_s4_log.txt" 2>&1
echo "tokenizer bench rc=$?"; tail -25 "$OUT/tokenizer_bench_h200_s4_log.txt"
timeout 90 python3 bench/pretrain_s4_smoke.py --tokens .engA_gpu/tokens/vq512 --tokenizer .engA_gpu/tokenizers/vq512 \
    --steps 40 --micro 256 --accum 2 --out "$OUT/pretrain_s4_smoke_lead.json" 2>&1 \
    | grep -v "it/s\]\|step/s\]" | tail -30 > "$OUT/pretrain_s4_smoke_lead_log.txt"
echo "pretrain smoke rc=${PIPESTATUS[0]}"; tail -5 "$OUT/pretrain_s4_smoke_lead_log.txt" | cut -c1-600
timeout 110 python3 -m pytest -q -x -p no:cacheprovider tests/test_tokenizers_dwconv_triton.py tests/test_models_fused_norm.py \
    tests/test_pretrain_train_step.py tests/test_tokenizers_distance.py > "$OUT/cuda_tests_s4_log.txt" 2>&1
echo "cuda tests rc=$?"; tail -8 "$OUT/cuda_tests_s4_log.txt"

#!/usr/bin/env bash
# Lead, session 6, one device call over the final tree (OUT = the device's output folder, TOKDIR carried):
#   1. every CUDA test of the fused ops, the train step, graph resume (incl. deterministic mode) and
#      LoRA-on-fused backbones, with helper N's final backward defaults and the persistent-grid refactor;
#   2. the kernel families of paper.yaml's eager step with and without pretrain.deterministic
#      (where its +64% goes), from bench/pretrain_bench.py's profiler.
set -u
export PYTHONPATH=src
TOKDIR=.engA_gpu/tokens/vq512
nvidia-smi -L > "$OUT/lead_s6_env.txt" 2>&1
timeout 200 python3 -m pytest -q -rA -p no:cacheprovider tests/test_models_fused_gelu.py tests/test_models_fused_norm.py \
    tests/test_models_fused_rope.py tests/test_pretrain_train_step.py tests/test_pretrain_graph_resume.py \
    tests/test_finetune_lora_fused.py -k cuda > "$OUT/lead_s6_cuda_tests_log.txt" 2>&1
echo "tests rc=$?" >> "$OUT/lead_s6_env.txt"
timeout 150 python3 bench/pretrain_bench.py --device cuda --tokens "$TOKDIR" --lr 3e-4 --no-correctness --no-step-check \
    --runs vqdna_bf16_fused_static_rope_gelu@256:30,vqdna_bf16_fused_static_rope_gelu_det@256:30 \
    --profile vqdna_bf16_fused_static_rope_gelu@256,vqdna_bf16_fused_static_rope_gelu_det@256 \
    --profile-dir "$OUT/lead_s6_profiles" --out "$OUT/lead_s6_det_profile.json" > "$OUT/lead_s6_det_profile_log.txt" 2>&1
echo "profile rc=$?" >> "$OUT/lead_s6_env.txt"

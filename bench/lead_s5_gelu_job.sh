#!/usr/bin/env bash
# Lead, session 5: the GELU op's branch-free erf (fused_gelu TILES erf_poly) against libdevice's
# erff, one device call (OUT = the device's output folder, TOKDIR carried):
#   1. the GELU op's CUDA tests; 2. bench/gelu_kernel_check.py --quick (kernel times of both erfs,
#   fp32 errors over z in [-12, 12] against fp64, bf16 outputs that differ); 3. the step A/B with
#   loss curves (erflib = the default so far, erfpoly; each with a _seed1 twin for the tolerance).
set -u
export PYTHONPATH=src
TOKDIR=.engA_gpu/tokens/vq512
nvidia-smi -L > "$OUT/gelu_env.txt" 2>&1
timeout 60 python3 -m pytest -q -rA -p no:cacheprovider tests/test_models_fused_gelu.py -k cuda > "$OUT/gelu_cuda_tests_log.txt" 2>&1
echo "tests rc=$?" >> "$OUT/gelu_env.txt"
OUT="$OUT" timeout 80 python3 bench/gelu_kernel_check.py --quick > "$OUT/gelu_kernel_check_log.txt" 2>&1
echo "kernel check rc=$?" >> "$OUT/gelu_env.txt"
timeout 200 python3 bench/pretrain_bench.py --device cuda --tokens "$TOKDIR" --lr 3e-4 --curve-window 50 \
    --curve-ref vqdna_bf16_fused_cg_rope_gelu_erflib --no-step-check \
    --runs stock@256:20,vqdna_bf16_fused_cg_rope_gelu_erflib@256:160,vqdna_bf16_fused_cg_rope_gelu_erfpoly@256:160,vqdna_bf16_fused_cg_rope_gelu_erflib_seed1@256:160,vqdna_bf16_fused_cg_rope_gelu_erfpoly_seed1@256:160 \
    --budget-s 170 --out "$OUT/pretrain_gelu_erf.json" > "$OUT/pretrain_gelu_erf_log.txt" 2>&1
echo "bench rc=$?" >> "$OUT/gelu_env.txt"

#!/usr/bin/env bash
# Session 6, helper N: the backward kernels of the fused norm and RoPE ops, one device call
# (OUT = the device's output folder; TOKDIR carried):
#   MODE=sweep  bench/norm_rope_bwd_check.py (launch variants, bitwise check against session 5's
#               kernel, errors vs fp32), then the step A/B with the fastest variants installed
#               (bench/helper_n_s6_step.py: _s5bwd vs _s6bwd, same call, stock reference)
#   MODE=final  the CUDA tests of both ops with the module defaults, the kernel check again
#               (CUDA-graph timing), then the step: stock, _s5bwd, the module defaults, _s6bwd
#               (the check's fastest), _s5bwd's seed1 twin
set -u
export PYTHONPATH=src
TOKDIR=.engA_gpu/tokens/vq512
MODE=${MODE:-sweep}
nvidia-smi -L > "$OUT/env_$MODE.txt" 2>&1
python3 -c "import torch, triton; print(torch.__version__, triton.__version__)" >> "$OUT/env_$MODE.txt" 2>&1
if [ "$MODE" = sweep ]; then
    OUT="$OUT" timeout 135 python3 bench/norm_rope_bwd_check.py > "$OUT/check_log.txt" 2>&1
    echo "check rc=$?" >> "$OUT/env_$MODE.txt"
    BEST="$OUT/norm_rope_bwd_best.json" timeout 175 python3 bench/helper_n_s6_step.py --device cuda --tokens "$TOKDIR" \
        --lr 3e-4 --curve-window 50 --curve-ref vqdna_bf16_fused_cg_rope_gelu_s5bwd --no-step-check --no-correctness \
        --runs stock@256:20,vqdna_bf16_fused_cg_rope_gelu_s5bwd@256:150,vqdna_bf16_fused_cg_rope_gelu_s6bwd@256:150,vqdna_bf16_fused_cg_rope_gelu_s5bwd_seed1@256:150 \
        --budget-s 150 --out "$OUT/step_ab.json" > "$OUT/step_ab_log.txt" 2>&1
    echo "step rc=$?" >> "$OUT/env_$MODE.txt"
else
    timeout 80 python3 -m pytest -q -rA -p no:cacheprovider tests/test_models_fused_norm.py tests/test_models_fused_rope.py -k cuda \
        > "$OUT/cuda_tests_log.txt" 2>&1
    echo "tests rc=$?" >> "$OUT/env_$MODE.txt"
    OUT="$OUT" timeout 100 python3 bench/norm_rope_bwd_check.py > "$OUT/check_final_log.txt" 2>&1
    echo "check rc=$?" >> "$OUT/env_$MODE.txt"
    BEST="$OUT/norm_rope_bwd_best.json" timeout 135 python3 bench/helper_n_s6_step.py --device cuda --tokens "$TOKDIR" \
        --lr 3e-4 --curve-window 50 --curve-ref vqdna_bf16_fused_cg_rope_gelu_s5bwd --no-step-check --no-correctness \
        --runs stock@256:20,vqdna_bf16_fused_cg_rope_gelu_s5bwd@256:150,vqdna_bf16_fused_cg_rope_gelu@256:150,vqdna_bf16_fused_cg_rope_gelu_s6bwd@256:150,vqdna_bf16_fused_cg_rope_gelu_s5bwd_seed1@256:150 \
        --budget-s 110 --out "$OUT/step_final.json" > "$OUT/step_final_log.txt" 2>&1
    echo "step rc=$?" >> "$OUT/env_$MODE.txt"
fi

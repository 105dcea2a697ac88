#!/usr/bin/env bash
# Session 5's final stage-2 step measurement (issue #4, helper K2), one device call: the CUDA
# tests of the fused ops (add+dropout+LayerNorm, qkv bias + RoPE, fc1 bias + GELU, the partial-sum
# finish), then the bench: one-step fp32 comparison, the fused norm op's kernel check with the
# launch-shape sweep (register-cap / warps-per-row entries, partial-sum finish torch vs Triton;
# the fastest installed for the runs), the RoPE op's check, the runs with loss curves against
# session 4's fused path (`_nofold`) and its `_seed1` twin, profiles. Everything under $OUT as it goes.
#   bash bench/pretrain_s5_final_job.sh [RUNS] [BUDGET_S] [NAME]
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
TOK=.engA_gpu/tokens/vq512
RUNS=${1:-"stock@256:30,vqdna_bf16_fused_cg_nofold@256:160,vqdna_bf16_fused_cg_rope@256:160,vqdna_bf16_fused_cg_rope_gelu@256:160,vqdna_bf16_fused_cg_nofold_seed1@256:160,vqdna_bf16_fused_cg_rope_s5ktiles@256:160,vqdna_bf16_fused_cg_rope_gelu_bhtd@256:160,vqdna_bf16_fused_cg_rope_bhtd@256:160"}
BUDGET=${2:-265}
NAME=${3:-pretrain_h200_s5final}
PROFILE=${PROFILE:-"vqdna_bf16_fused_cg_rope@256,vqdna_bf16_fused_cg_rope_gelu@256"}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/env.txt"
python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" | tee -a "$OUT/env.txt"
if [ "${TESTS:-1}" = 1 ]; then  # the CUDA cases of the ops' tests
  timeout 75 python3 -m pytest -q -p no:cacheprovider tests/test_models_fused_norm.py tests/test_models_fused_rope.py \
    tests/test_models_fused_gelu.py tests/test_models_partial_sums.py -k cuda -rA 2>&1 | tail -45 | tee "$OUT/${NAME}_tests_log.txt"
fi
timeout $((BUDGET + 50)) python3 bench/pretrain_bench.py --device cuda --tokens $TOK --kernel-check --tile-sweep --lr 3e-4 \
  --curve-window 50 --curve-ref vqdna_bf16_fused_cg_nofold --no-step-check --runs "$RUNS" \
  --profile "$PROFILE" --profile-dir "$OUT" --budget-s "$BUDGET" \
  --out "$OUT/$NAME.json" 2>&1 | tee "$OUT/${NAME}_log.txt"

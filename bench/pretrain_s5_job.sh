#!/usr/bin/env bash
# One device call of the stage-2 step work (issue #4, session 5, helper K): the CUDA tests of the
# fused ops (add+dropout+LayerNorm with the folded out_proj/fc2 biases, qkv bias + RoPE), then
# the bench: kernel checks (the RoPE op's launch-shape sweep installs the fastest), the one-step
# fp32 comparison, the runs with loss curves against session 4's fused path (`_nofold`) and its
# `_seed1` twin, a profile of the RoPE variant. Everything under $OUT, written as it goes.
#   bash bench/pretrain_s5_job.sh [RUNS] [BUDGET_S] [NAME] [EXTRA BENCH FLAGS...]
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
TOK=.engA_gpu/tokens/vq512
RUNS=${1:-"stock@256:30,vqdna_bf16_fused_cg_nofold@256:160,vqdna_bf16_fused_cg@256:160,vqdna_bf16_fused_cg_rope@256:160,vqdna_bf16_fused_cg_rope_seed1@256:160,vqdna_bf16_fused_cg_nofold_seed1@256:160,vqdna_bf16_fused_cg_rope_bhtd@256:60"}
BUDGET=${2:-175}
NAME=${3:-pretrain_h200_s5k}
shift 3 2>/dev/null
PROFILE=${PROFILE:-"vqdna_bf16_fused_cg_rope@256"}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/env.txt"
python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" | tee -a "$OUT/env.txt"
if [ "${TESTS:-1}" = 1 ]; then  # the CUDA cases of the two ops' tests
  timeout 45 python3 -m pytest -q -p no:cacheprovider tests/test_models_fused_rope.py tests/test_models_fused_norm.py \
    -k cuda -rA 2>&1 | tail -40 | tee "$OUT/${NAME}_tests_log.txt"
fi
timeout $((BUDGET + 40)) python3 bench/pretrain_bench.py --device cuda --tokens $TOK --kernel-check --rope-sweep --lr 3e-4 \
  --curve-window 50 --curve-ref vqdna_bf16_fused_cg_nofold --no-step-check --runs "$RUNS" "$@" \
  --profile "$PROFILE" --profile-dir "$OUT" --budget-s "$BUDGET" \
  --out "$OUT/$NAME.json" 2>&1 | tee "$OUT/${NAME}_log.txt"

#!/usr/bin/env bash
# One device call of the stage-2 step work (issue #4, session 3): `profile` = kernel check, the
# fp32 comparison, profiles of vqdna_bf16 and vqdna_bf16_fused, cheap compile variants;
# `final` = stock + the best variants + vqdna_bf16 with loss curves. Writes under $OUT.
set -o pipefail
mode=${1:-profile}
export PYTHONUNBUFFERED=1 PYTHONPATH=src
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
TOK=.engA_gpu/tokens/vq512
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/env.txt"
python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" | tee -a "$OUT/env.txt"
if [ "$mode" = profile ]; then
  timeout 395 python3 bench/pretrain_bench.py --device cuda --tokens $TOK --kernel-check --lr 3e-4 \
    --runs "stock@256:20,vqdna_bf16@256:30,vqdna_bf16_fused@256:30,vqdna_bf16_rngfn@256:20,vqdna_bf16_mat@256:20,vqdna_bf16_cdt@256:20" \
    --profile "vqdna_bf16@256,vqdna_bf16_fused@256" --profile-dir "$OUT" --budget-s 280 \
    --out "$OUT/pretrain_h200_s3_profile.json" 2>&1 | tee "$OUT/log.txt"
else
  timeout 400 python3 bench/pretrain_bench.py --device cuda --tokens $TOK --kernel-check --lr 3e-4 --curve-window 50 \
    --runs "stock@256:30,vqdna_bf16@256:160,vqdna_bf16_seed1@256:160,vqdna_bf16_fused@256:160,vqdna_bf16_fused_rs@256:160,vqdna_bf16_fused_rs_seed1@256:160,vqdna_bf16_rs@256:60,stock@512:20,vqdna_bf16_fused_rs_cdt@256:60" \
    --profile "vqdna_bf16@256,vqdna_bf16_fused@256,vqdna_bf16_fused_rs@256" --profile-dir "$OUT" --budget-s 320 \
    --out "$OUT/pretrain_h200_s3.json" 2>&1 | tee "$OUT/log.txt"
fi

#!/usr/bin/env bash
# One device call of the stage-2 step work (issue #4, session 4). `bash bench/pretrain_s4_job.sh
# [RUNS] [BUDGET_S] [NAME] [EXTRA BENCH FLAGS...]`: kernel check with the fused op's launch-shape
# sweep (the fastest installed for the runs), the fp32 comparison (unless --no-correctness), the
# runs with loss curves and profiles, the static-vs-dynamic and graph-vs-eager step check last;
# then, with SMOKE=1, `pretrain()` itself with cuda_graphs and 2 micro-batches a step. Under $OUT.
#   call 1: bash bench/pretrain_s4_job.sh
#   call 2: TESTS=1 SMOKE=1 PROFILE=vqdna_bf16_fused_cg@256 bash bench/pretrain_s4_job.sh \
#           "stock@256:30,vqdna_bf16@256:160,vqdna_bf16_seed1@256:160,vqdna_bf16_fused_cg@256:160,vqdna_bf16_fused_cg_seed1@256:160" \
#           110 pretrain_h200_s4b --no-correctness
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
TOK=.engA_gpu/tokens/vq512
RUNS=${1:-"stock@256:30,vqdna_bf16@256:160,vqdna_bf16_seed1@256:160,vqdna_bf16_fused@256:160,vqdna_bf16_cg@256:160,vqdna_bf16_fused_cg@256:160,vqdna_bf16_fused_cg_seed1@256:160,vqdna_bf16_static@256:60"}
BUDGET=${2:-215}
NAME=${3:-pretrain_h200_s4}
shift 3 2>/dev/null
PROFILE=${PROFILE:-"vqdna_bf16@256,vqdna_bf16_fused@256,vqdna_bf16_fused_cg@256"}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/env.txt"
python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" | tee -a "$OUT/env.txt"
timeout $((BUDGET + 30)) python3 bench/pretrain_bench.py --device cuda --tokens $TOK --kernel-check --tile-sweep --lr 3e-4 \
  --curve-window 50 --runs "$RUNS" "$@" \
  --profile "$PROFILE" --profile-dir "$OUT" --budget-s "$BUDGET" \
  --out "$OUT/$NAME.json" 2>&1 | tee "$OUT/${NAME}_log.txt"
if [ "${TESTS:-0}" = 1 ]; then  # the CUDA cases of the op's and the step's tests
  timeout 35 python3 -m pytest -q -x -p no:cacheprovider tests/test_pretrain_train_step.py tests/test_models_fused_norm.py \
    -k cuda 2>&1 | tail -15 | tee "$OUT/${NAME}_tests_log.txt"
fi
if [ "${SMOKE:-0}" = 1 ]; then
  timeout 45 python3 bench/pretrain_s4_smoke.py --tokens $TOK --tokenizer .engA_gpu/tokenizers/vq512 --steps 40 \
    --micro 256 --accum 2 --out "$OUT/${NAME}_pretrain_smoke.json" 2>&1 | grep -v "it/s\]\|step/s" | tail -30 | tee "$OUT/${NAME}_smoke_log.txt"
fi

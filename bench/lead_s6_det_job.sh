#!/usr/bin/env bash
# Lead, session 6, second call: pretrain.deterministic after its three costs were removed (special
# tokens as selects, row gathers of the sparse last block, no NaN fill of new tensors):
#   1. CUDA tests of the train step and the bitwise graph/eager resume (strict deterministic mode);
#   2. paper.yaml's eager step with and without the key, same call, with stock as the reference,
#      and the kernel families of the deterministic step.
# Run twice: first call as written then (its -k filter missed the resume tests); the second
# (PASS=2) runs the whole resume test file and interleaves the eager/graphed A/B, both profiled.
set -u
export PYTHONPATH=src
TOKDIR=.engA_gpu/tokens/vq512
nvidia-smi -L > "$OUT/lead_s6_det_env.txt" 2>&1
if [ "${PASS:-1}" = 2 ]; then
  timeout 150 python3 -m pytest -q -rA -p no:cacheprovider tests/test_pretrain_graph_resume.py > "$OUT/lead_s6_det_tests2_log.txt" 2>&1
  echo "resume tests rc=$?" >> "$OUT/lead_s6_det_env.txt"
  E=vqdna_bf16_fused_static_rope_gelu; G=vqdna_bf16_fused_cg_rope_gelu
  timeout 230 python3 bench/pretrain_bench.py --device cuda --tokens "$TOKDIR" --lr 3e-4 --no-correctness --no-step-check \
      --curve-window 50 --curve-ref $E \
      --runs stock@256:20,$E@256:100,${E}_det@256:100,$E@256:100,${E}_det@256:100,$G@256:60,${G}_det@256:60 \
      --profile $E@256,${E}_det@256 \
      --profile-dir "$OUT/lead_s6_det2_profiles" --out "$OUT/lead_s6_det_ab.json" > "$OUT/lead_s6_det_ab_log.txt" 2>&1
  echo "bench rc=$?" >> "$OUT/lead_s6_det_env.txt"
  exit 0
fi
timeout 150 python3 -m pytest -q -rA -p no:cacheprovider tests/test_pretrain_train_step.py tests/test_pretrain_graph_resume.py \
    tests/test_pretrain_model.py -k "cuda or special or sparse" > "$OUT/lead_s6_det_tests_log.txt" 2>&1
echo "tests rc=$?" >> "$OUT/lead_s6_det_env.txt"
timeout 200 python3 bench/pretrain_bench.py --device cuda --tokens "$TOKDIR" --lr 3e-4 --no-correctness --no-step-check \
    --curve-window 50 --curve-ref vqdna_bf16_fused_static_rope_gelu \
    --runs stock@256:20,vqdna_bf16_fused_static_rope_gelu@256:100,vqdna_bf16_fused_static_rope_gelu_det@256:100,vqdna_bf16_fused_cg_rope_gelu_det@256:60 \
    --profile vqdna_bf16_fused_static_rope_gelu_det@256 \
    --profile-dir "$OUT/lead_s6_det_profiles" --out "$OUT/lead_s6_det_after.json" > "$OUT/lead_s6_det_after_log.txt" 2>&1
echo "bench rc=$?" >> "$OUT/lead_s6_det_env.txt"

#!/usr/bin/env bash
# Helper D, session 6: what pretrain.deterministic costs and whether it delivers, one device call
# (OUT = the device's output folder; .engA_gpu carried):
#   1. the step A/B at paper shapes (BERT-base, batch 256 x 256 tokens, bf16 weights, compiled blocks,
#      all three fused ops): TrainStep's eager path (paper.yaml: cuda_graphs off under DDP) without and
#      with torch's deterministic algorithms (strict), alternated twice; then the graphed pair.
#      CUBLAS_WORKSPACE_CONFIG=:4096:8 for the whole process: the value deterministic mode needs, read
#      when cuBLAS starts, and torch's default workspace on sm90 anyway (so the A side is unchanged)
#   2. the CUDA resume tests: TrainStep graphed/eager under the helper pretrain.deterministic uses, and
#      `vqdna pretrain`'s job (pretrain()) with the key on, killed and resumed, eager and graphed
#   3. LoRA on the fused backbone on CUDA (unchanged code; the regression check the brief asks for)
set -u
export PYTHONPATH=src
export CUBLAS_WORKSPACE_CONFIG=:4096:8
TOKDIR=.engA_gpu/tokens/vq512
{ nvidia-smi -L; python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.backends.cudnn.version())"; } > "$OUT/env.txt" 2>&1
A=vqdna_bf16_fused_static_rope_gelu
G=vqdna_bf16_fused_cg_rope_gelu
timeout 150 python3 bench/pretrain_bench.py --device cuda --tokens "$TOKDIR" --lr 3e-4 --curve-ref $A \
    --no-correctness --no-step-check --budget-s 135 \
    --runs $A@256:100,${A}_det@256:100,$A@256:100,${A}_det@256:100,$G@256:100,${G}_det@256:100 \
    --out "$OUT/pretrain_deterministic_s6.json" > "$OUT/bench_log.txt" 2>&1
echo "bench rc=$?" >> "$OUT/env.txt"
timeout 130 python3 -m pytest -q -rfEs -p no:cacheprovider tests/test_pretrain_graph_resume.py > "$OUT/resume_tests_log.txt" 2>&1
echo "resume tests rc=$?" >> "$OUT/env.txt"
timeout 40 python3 -m pytest -q -rfEs -p no:cacheprovider tests/test_finetune_lora_fused.py -k cuda > "$OUT/lora_fused_log.txt" 2>&1
echo "lora tests rc=$?" >> "$OUT/env.txt"

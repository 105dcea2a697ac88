"""bench/pretrain_bench.py with two more variants: the graphed fused path (RoPE + GELU ops) with
session 5's backward launch shapes of the norm and RoPE ops (`_s5bwd`) and with the ones in
$BEST (`_s6bwd`, the JSON bench/norm_rope_bwd_check.py writes; default: the modules' TILES), so
both run in one process against the same stock reference. Everything else is pretrain_bench's
(same arguments). Session 6, helper N.

    BEST=best.json PYTHONPATH=src python3 bench/helper_n_s6_step.py --runs stock@256:20,..._s5bwd@256:150,... ARGS
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pretrain_bench as pb  # noqa: E402

from vqdna.models import fused_norm, fused_rope  # noqa: E402

S5_NORM = {"bwd_rows": 1, "bwd_warps": 1, "bwd_progs_per_sm": 12, "bwd_maxnreg": 168, "bwd_loads": 0,
           "bwd_stages": 1, "bwd_rand_first": 0}
S5_ROPE = {"bwd_rows": 2, "bwd_warps": 4, "bwd_progs_per_sm": 4, "bwd_stages": 1, "bwd_loads_first": 0}


def best_tiles() -> tuple[dict, dict]:
    path = os.environ.get("BEST")
    best = json.load(open(path)) if path and os.path.exists(path) else {}
    norm = best.get("norm") or {k: fused_norm.TILES[k] for k in S5_NORM}
    rope = best.get("rope") or {k: fused_rope.TILES[k] for k in S5_ROPE}
    return {k: norm[k] for k in S5_NORM}, {k: rope[k] for k in S5_ROPE}


def register() -> None:
    norm6, rope6 = best_tiles()
    base = pb.VARIANTS["vqdna_bf16_fused_cg_rope_gelu"]
    for suffix, norm, rope in (("_s5bwd", S5_NORM, S5_ROPE), ("_s6bwd", norm6, rope6)):
        name = "vqdna_bf16_fused_cg_rope_gelu" + suffix
        pb.VARIANTS[name] = dict(base, norm_tiles=dict(norm), rope_tiles=dict(rope))
        pb.VARIANTS[name + "_seed1"] = dict(pb.VARIANTS[name], dropout_seed=1)
    print("s6bwd tiles:", norm6, rope6, flush=True)
    run_variant = pb.run_variant

    def with_rope_tiles(name, *args, **kwargs):  # pretrain_bench has no rope_tiles key: set them here
        tiles = pb.VARIANTS[name].get("rope_tiles")
        old = fused_rope.set_tiles(**tiles) if tiles else None
        try:
            return run_variant(name, *args, **kwargs)
        finally:
            if old is not None:
                fused_rope.set_tiles(**old)

    pb.run_variant = with_rope_tiles


if __name__ == "__main__":
    register()
    pb.main()

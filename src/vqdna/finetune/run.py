"""`vqdna finetune`: ONE dataset x grid point x seed.

    vqdna finetune --tokenizer hrq --dataset emp_H3 --point lr3e-05_do0.05_ep4 --seed 0 \
        --data results/datasets/emp_H3 --tokenizer-dir results/tokenizers/hrq \
        --backbone-dir results/pretrain/hrq --out results/finetune/hrq/emp_H3/runs/<point>/seed0/metrics.json

Writes metrics.json with dev and test metrics of the model after the point's last epoch. The
choice among points happens later, in `vqdna summarize`, on dev only.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--tokenizer", required=True, help="tokenizer name ({tok} in results paths)")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--point", required=True, help="grid point id (vqdna.finetune.grid.point_id)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data", required=True, help="prepared dataset directory (vqdna prepare-dataset)")
    parser.add_argument("--tokenizer-dir", required=True)
    parser.add_argument("--backbone-dir", required=True, help="results/pretrain/{tok} (save_pretrained)")
    parser.add_argument("--out", required=True, help="metrics.json to write")


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def finetune_once(*, data_dir, tokenizer_dir, backbone_dir, params: dict, seed: int, ft_cfg: dict,
                  device_name: str = "cpu", progress: bool = True) -> dict:
    """Train one model and return {dev, test, fit, n} (no tracking, no files)."""
    import torch

    from ..datasets.store import read_meta, read_split
    from ..seeding import seed_everything
    from ..tokenizers import load_tokenizer
    from .data import encode_all
    from .metrics import compute_metrics
    from .model import build_model
    from .train import fit, predict

    if ft_cfg["cpu_threads"]:
        torch.set_num_threads(int(ft_cfg["cpu_threads"]))
    device = resolve_device(device_name)
    meta = read_meta(data_dir)
    task = meta["task"]
    splits = {s: read_split(data_dir, s) for s in ("train", "dev", "test")}
    tokenizer = load_tokenizer(tokenizer_dir)
    tokens = {s: encode_all(tokenizer, splits[s].sequences) for s in splits}
    seed_everything(seed)
    num_out = 1 if task == "regression" else int(meta["num_labels"])
    model = build_model(str(backbone_dir), num_out, ft_cfg, params).to(device)
    bconf = model.backbone.config
    if ft_cfg["frozen_bf16"] and ft_cfg["bf16"] and device.type == "cuda":
        from .model import cast_frozen

        cast_frozen(model)
    if ft_cfg["compile"] and device.type == "cuda":
        # dynamic: inference runs at each dataset's full length, training at <= train_max_tokens
        model.backbone = torch.compile(model.backbone, dynamic=True)
    result = fit(model, tokens["train"], splits["train"].labels, task=task, params=params, ft_cfg=ft_cfg,
                 backbone_config=bconf, device=device, seed=seed, progress=progress)
    out = {"fit": {"steps": result.steps, "final_loss": result.final_loss, "seconds": result.seconds},
           "n": {s: len(splits[s]) for s in splits}}
    for s in ("dev", "test"):
        pred = predict(model, tokens[s], task=task, ft_cfg=ft_cfg, backbone_config=bconf, device=device, fit_result=result)
        out[s] = compute_metrics(task, splits[s].labels, pred)
    out["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out["total_params"] = sum(p.numel() for p in model.parameters())
    out["device"] = str(device)
    return out


def run(args, cfg) -> int:
    from ..atomic import write_json
    from ..datasets.store import read_meta
    from ..tracking import start_run
    from .grid import point_params

    ft = cfg["finetune"]
    params = point_params(ft["grid"], args.point)
    meta = read_meta(args.data)
    metric = meta["metric"]
    name = f"finetune/{args.tokenizer}/{args.dataset}/{args.point}/seed{args.seed}"
    tags = {"dataset": args.dataset, "tokenizer": args.tokenizer, "grid_point": args.point, "seed": args.seed,
            "demo_stand_in": meta.get("demo_stand_in", False)}
    with start_run(cfg, stage="finetune", name=name, tags=tags,
                   params={**params, "seed": args.seed, "mode": ft["mode"], "pooling": ft["pooling"],
                           "lora": ft["lora"], "train_max_tokens": ft["train_max_tokens"], "dataset": args.dataset,
                           "tokenizer": args.tokenizer}) as mlrun:
        t0 = time.time()
        res = finetune_once(data_dir=args.data, tokenizer_dir=args.tokenizer_dir, backbone_dir=args.backbone_dir,
                            params=params, seed=args.seed, ft_cfg=ft, device_name=cfg.get("device", "auto"))
        mlrun.log_metrics({**{f"dev.{k}": v for k, v in res["dev"].items()},
                           **{f"test.{k}": v for k, v in res["test"].items()},
                           "train.final_loss": res["fit"]["final_loss"], "train.seconds": res["fit"]["seconds"]})
        record = {
            "dataset": args.dataset, "tokenizer": args.tokenizer, "point": args.point, "params": params,
            "seed": args.seed, "metric": metric, "task": meta["task"], "demo_stand_in": meta.get("demo_stand_in", False),
            "dev": res["dev"], "test": res["test"], "fit": res["fit"], "n": res["n"],
            "trainable_params": res["trainable_params"], "total_params": res["total_params"], "device": res["device"],
            "wall_seconds": time.time() - t0, "mlflow_run_id": mlrun.run_id,
        }
        write_json(args.out, record)
    log.info("%s: dev %s=%.4f test %s=%.4f", name, metric, res["dev"][metric], metric, res["test"][metric])
    return 0

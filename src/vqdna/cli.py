"""`vqdna <stage> ...`: one subcommand per pipeline stage.

Each stage module exposes `add_arguments(parser)` and `run(args, cfg) -> int | None`.
Modules are imported only when their subcommand runs, so `vqdna --help` and the light
stages stay fast and do not need torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import VQDNAError

# subcommand -> (module, one-line help)
STAGES: dict[str, tuple[str, str]] = {
    "download": ("vqdna.genomes.download", "fetch genomes (NCBI or a local directory) with checksums"),
    "shard": ("vqdna.genomes.shard", "cut genomes into fixed-length windows stored as Arrow shards"),
    "train-tokenizer": ("vqdna.tokenizers.train", "stage 1: train a VQ/HRQ or baseline tokenizer"),
    "tokenize": ("vqdna.tokens.tokenize", "encode shards into binary token files"),
    "pretrain": ("vqdna.models.pretrain", "stage 2: masked-LM pretraining of the backbone"),
    "prepare-dataset": ("vqdna.datasets.prepare", "download/validate one downstream dataset"),
    "finetune": ("vqdna.finetune.run", "stage 3: LoRA fine-tune one dataset x grid point x seed"),
    "summarize": ("vqdna.finetune.summarize", "pick the best grid point on dev and summarise seeds on test"),
    "probe": ("vqdna.report.probe", "Table 1 analysis: token usage and linear probe of one tokenizer"),
    "aggregate": ("vqdna.report.aggregate", "build the paper's tables and figures"),
    "install-profile": ("vqdna.cluster.profile", "install the Slurm/local Snakemake profile by name"),
    "mlflow-server": ("vqdna.cluster.mlflow_server", "run a shared MLflow tracking server"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vqdna", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vqdna {_version()}")
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    for name, (_module, help_text) in STAGES.items():
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(_module=_module)
        p.add_argument(
            "--config", "-c", action="append", default=None, metavar="FILE",
            help="config YAML/JSON (repeatable, later files win); default config/config.yaml",
        )
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config key, e.g. --set pretrain.lr=1e-4")
        p.add_argument("-v", "--verbose", action="store_true")
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Let each stage add its own arguments: parse the stage name first.
    # (-h is held back until then, so `vqdna <stage> --help` lists the stage's own options too)
    wants_help = any(a in ("-h", "--help") for a in argv)
    known, _ = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])
    if known.stage is None:
        parser.print_help()
        return 0 if wants_help else 2
    module = importlib.import_module(STAGES[known.stage][0])
    stage_parser = parser._subparsers._group_actions[0].choices[known.stage]  # type: ignore[union-attr]
    module.add_arguments(stage_parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = None
        if getattr(module, "NEEDS_CONFIG", True):
            from .config import load_config

            cfg = load_config(args.config or ["config/config.yaml"], args.set)
        rc = module.run(args, cfg)
    except VQDNAError as exc:
        print(f"vqdna {known.stage}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())

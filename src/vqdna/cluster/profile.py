"""`vqdna install-profile`: make `snakemake --profile slurm` (a profile *name*) find this repo's
profiles.

Snakemake looks a profile name up in the current directory, then in the user's config folder
(`$XDG_CONFIG_HOME/snakemake`, usually `~/.config/snakemake`), then in the system one
(`/etc/xdg/snakemake`); a path (`--profile profiles/slurm`) is taken as is. This command links
(or copies, `--copy`) `profiles/<name>/` of the repo into one of those folders, so from the repo
root

    vqdna install-profile            # ~/.config/snakemake/{slurm,local} -> <repo>/profiles/...
    snakemake --profile slurm all --configfile config/paper.yaml

A link keeps following the repo's profile as it changes; `--copy` gives a copy to edit per site
(account, partition). An existing entry that is not the same link is left alone unless `--force`.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from ..errors import ConfigError

NEEDS_CONFIG = False
PROFILES = ("slurm", "local")


def repo_profiles_dir() -> Path:
    """`profiles/` of the current directory (the repo root, as documented), else of the working
    copy this package is installed from (editable install)."""
    cwd = Path.cwd() / "profiles"
    if (cwd / "slurm" / "config.yaml").is_file():
        return cwd
    return Path(__file__).resolve().parents[3] / "profiles"


def user_profile_root() -> Path:
    """Where Snakemake looks profile names up for this user (same rule as Snakemake's appdirs)."""
    try:
        from snakemake.cli import get_appdirs

        return Path(get_appdirs().user_config_dir)
    except Exception:  # noqa: BLE001 - older/newer snakemake layouts
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        return Path(base) / "snakemake"


def site_profile_root() -> Path:
    try:
        from snakemake.cli import get_appdirs

        return Path(get_appdirs().site_config_dir)
    except Exception:  # noqa: BLE001
        return Path("/etc/xdg/snakemake")


def install(name: str, source_root: Path, dest_root: Path, *, copy: bool = False, force: bool = False) -> Path:
    src = (source_root / name).resolve()
    if not (src / "config.yaml").is_file():
        raise ConfigError(f"{src}/config.yaml: no such profile")
    dest = dest_root / name
    dest_root.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() and not copy and Path(os.readlink(dest)) == src:
        return dest  # already installed
    if dest.exists() or dest.is_symlink():
        if not force:
            raise ConfigError(f"{dest} already exists (not a link to {src}); use --force to replace it")
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        else:
            dest.unlink()
    if copy:
        shutil.copytree(src, dest)
    else:
        dest.symlink_to(src, target_is_directory=True)
    return dest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", default=list(PROFILES), metavar="NAME",
                        help=f"profiles to install (default: {' '.join(PROFILES)})")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--dest", type=Path, default=None,
                       help="folder to install into (default: the user's snakemake config folder)")
    where.add_argument("--system", action="store_true",
                       help="install for every user of this machine (the system snakemake config folder)")
    parser.add_argument("--copy", action="store_true", help="copy instead of linking")
    parser.add_argument("--force", action="store_true", help="replace an existing profile of the same name")
    parser.add_argument("--source", type=Path, default=None, help="folder holding the profiles (default: the repo's profiles/)")


def run(args: argparse.Namespace, cfg) -> int:
    source = args.source or repo_profiles_dir()
    dest_root = args.dest or (site_profile_root() if args.system else user_profile_root())
    for name in args.names:
        dest = install(name, source, dest_root, copy=args.copy, force=args.force)
        kind = "copied to" if args.copy else "linked at"
        print(f"profile {name!r} {kind} {dest}  (use: snakemake --profile {name} ...)")
    return 0

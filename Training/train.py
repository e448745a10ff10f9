#!/usr/bin/env python
"""Train any registered method on a folder of cases (labeled where a label exists).

Runs under plain Python and under Slicer's Python, headless:
    python Training/train.py --config SemiSupCardiacSegLib/configs/la_sassnet_cpu.json --out runs/la
    Slicer --no-main-window --python-script Training/train.py --config ... --out ...
No Qt, no GUI. Ctrl-C (or SIGTERM) saves ``last.pt``; ``--resume`` continues from it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from a checkout without pip install
    sys.path.insert(0, str(REPO))


def parse_args(argv: list[str]) -> argparse.Namespace:
    from SemiSupCardiacSegLib.methods import METHODS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="JSON config; command-line options override it")
    p.add_argument("--data", nargs="+", help="folder(s) or .list file(s) of cases")
    p.add_argument("--method", choices=sorted(METHODS),
                   help="method by name; without --config its paper configuration SemiSupCardiacSegLib/configs/NAME.json")
    p.add_argument("--labeled", type=int, help="number of labeled cases to use (the rest are unlabeled)")
    p.add_argument("--iterations", type=int)
    p.add_argument("--out", type=Path, required=True, help="output folder (checkpoints, log)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--stop-after", type=int, help="stop (saving last.pt) after N iterations of this run; --resume continues")
    p.add_argument("--init", type=Path, help="start from the weights of this model checkpoint (fine-tuning)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> dict:
    """The training config: --config (or, with --method alone, configs/METHOD.json), then the
    command-line overrides; relative data paths resolved from the current folder, the config's
    folder, then the repository. Raises ValueError naming an unreadable config."""
    config: dict = {}
    if args.config is None and args.method:  # --method NAME alone: that method's paper configuration
        args.config = REPO / "SemiSupCardiacSegLib" / "configs" / f"{args.method}.json"
    if args.config:
        try:
            config = json.loads(args.config.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read config {args.config}: {exc}") from exc
    for key in ("data", "method", "labeled", "iterations"):
        val = getattr(args, key)
        if val is not None:
            config[key] = val
    if args.init:
        config["init"] = str(args.init)
    if "data" in config:  # relative paths: from the current folder, else the config's folder, else the repo
        bases = [Path.cwd()] + ([args.config.resolve().parent] if args.config else []) + [REPO]
        srcs = config["data"] if isinstance(config["data"], list) else [config["data"]]
        config["data"] = [next((str(b / s) for b in bases if (b / s).exists()), s) for s in srcs]
        val_list = (config.get("validation") or {}).get("list")
        if val_list:
            config["validation"]["list"] = next((str(b / val_list) for b in bases if (b / val_list).exists()), val_list)
    return config


def main(argv: list[str] | None = None) -> int:
    # Slicer's --python-script passes its own argv; keep what follows the script name.
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    import torch

    from SemiSupCardiacSegLib.io import InputError
    from SemiSupCardiacSegLib.training import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        config = build_config(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if "data" not in config:
        print("error: no training data: give --data or a config with 'data'", file=sys.stderr)
        return 2
    try:
        result = Trainer(config, args.out, device=args.device, progress=not args.no_progress).run(resume=args.resume, stop_after=args.stop_after)
    except (InputError, RuntimeError) as exc:  # RuntimeError: e.g. out of GPU memory, with the batch size that fits
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in result.items() if k != "best"} | {"best_dice": (result["best"] or {}).get("dice")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())  # also ends a headless Slicer started with --python-script

#!/usr/bin/env python
"""Train any registered method on a folder of cases (labeled where a label exists).

Runs under plain Python and under Slicer's Python, headless:
    python Training/train.py --config SemiSupCardiacSegLib/configs/la_sassnet_cpu.json --out runs/la
    python Training/train.py --recipe recipes/la.json --out runs/la [--stage NAME]
    Slicer --no-main-window --python-script Training/train.py --config ... --out ...
No Qt, no GUI. Ctrl-C (or SIGTERM) saves ``last.pt``; ``--resume`` continues from it.
``--recipe`` runs a recipe's stages in order into OUT/<stage>/ (``SemiSupCardiacSegLib.recipes``):
finished stages are skipped, an interrupted one continues; ``--stage`` runs one stage alone.
Any failure ends with one line ``error: ...`` on stderr (the file and cause where there is one;
``--debug`` also prints the traceback) and exit code 2. The script always ends by raising
``SystemExit(code)``, success included, which is what makes a headless Slicer exit.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from a checkout without pip install
    sys.path.insert(0, str(REPO))

from SemiSupCardiacSegLib.errors import InputError, describe_os_error  # noqa: E402 (after the sys.path entry above)


def parse_args(argv: list[str]) -> argparse.Namespace:
    from SemiSupCardiacSegLib.methods import METHODS  # deferred: loads torch (start-up, --help)

    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="JSON config; command-line options override it")
    p.add_argument("--recipe", type=Path, help="recipe JSON: train its stages in order (recipes/*.json)")
    p.add_argument("--stage", help="with --recipe: run only this stage (the stages it reads must be complete)")
    p.add_argument("--data", nargs="+", help="folder(s) or .list file(s) of cases")
    p.add_argument(
        "--method",
        choices=sorted(METHODS),
        help="method by name; without --config its paper configuration SemiSupCardiacSegLib/configs/NAME.json",
    )
    p.add_argument("--labeled", type=int, help="number of labeled cases to use (the rest are unlabeled)")
    p.add_argument("--iterations", type=int)
    p.add_argument("--out", type=Path, required=True, help="output folder (checkpoints, log)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument(
        "--stop-after", type=int, help="stop (saving last.pt) after N iterations of this run; --resume continues"
    )
    p.add_argument("--init", type=Path, help="start from the weights of this model checkpoint (fine-tuning)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="on failure also print the traceback")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> dict:
    """The training config: --config (or, with --method alone, configs/METHOD.json) composed by
    ``config_files.load_config``, the command-line overrides merged last; relative data paths
    resolved from the current folder, the config's folder, then the repository
    (``config_files.resolve_data_paths``). Raises InputError naming an unreadable or invalid config."""
    from SemiSupCardiacSegLib.config_files import (  # deferred: loads torch (start-up, --help)
        CONFIGS,
        load_config,
        resolve_data_paths,
    )

    overrides = {key: getattr(args, key) for key in ("data", "method", "labeled", "iterations")}
    overrides = {key: val for key, val in overrides.items() if val is not None}
    if args.init:
        overrides["init"] = str(args.init)
    if args.config is None and args.method:  # --method NAME alone: that method's paper configuration
        args.config = CONFIGS / f"{args.method}.json"
    config = load_config(args.config, overrides) if args.config else overrides
    return resolve_data_paths(config, args.config)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one 'error:' line (no usage block), exit code 2
        raise SystemExit(_fail(f"{message} (see --help)"))


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def describe(exc: BaseException, config: Path | None = None) -> str:
    """One line naming the cause (and the file where there is one) of a failed run."""

    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        if top == "torch":
            return (
                "training needs PyTorch (in Slicer: install the PyTorch extension and its torch; "
                "else pip install torch)"
            )
        return f"training needs the {top} package (pip install {top}; in Slicer: slicer.util.pip_install('{top}'))"
    if isinstance(exc, InputError):  # its message names the file and the problem
        return first or exc.__class__.__name__
    if isinstance(exc, KeyError):
        where = f" in config {config}" if config else ""
        return f"missing or unknown key {exc.args[0]!r}{where} (KeyError)" if exc.args else f"KeyError{where}"
    if isinstance(exc, TypeError) and "unexpected keyword argument" in first and config:
        return f"{first} (an unknown key in config {config}?)"
    if isinstance(exc, OSError):  # the path and what the errno means: no space left, read-only, ...
        return describe_os_error(exc)
    if isinstance(exc, RuntimeError) and first:  # e.g. out of GPU memory, with the batch size that fits
        return first
    return f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__


#: Options a recipe's stages set themselves.
RECIPE_EXCLUDES = ("config", "data", "method", "labeled", "iterations", "init", "resume")


def check_args(args: argparse.Namespace) -> None:
    """The command-line numbers, range-checked before anything is read (the whole config is
    checked next, by the Trainer, before any case is loaded: ``config_check.validate_config``)."""

    for name, value in (
        ("--iterations", args.iterations),
        ("--labeled", args.labeled),
        ("--stop-after", args.stop_after),
        ("--threads", args.threads),
    ):
        if value is not None and value < 1:
            raise InputError(f"{name} must be >= 1, got {value}")
    if args.init is not None and not args.init.is_file():
        raise InputError(f"--init checkpoint not found: {args.init}")
    if args.recipe is None and args.stage is not None:
        raise InputError("--stage needs --recipe")
    if args.recipe is not None:
        given = [f"--{k}" for k in RECIPE_EXCLUDES if getattr(args, k) not in (None, False)]
        if given:
            raise InputError(
                f"--recipe takes its settings from its stages: {', '.join(given)} cannot be combined with it"
            )


def run(args: argparse.Namespace) -> int:
    import torch  # deferred: loads torch (start-up, --help)

    from SemiSupCardiacSegLib.training import Trainer  # deferred: loads torch (start-up, --help)

    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.recipe is not None:
        from SemiSupCardiacSegLib.recipes import run_recipe  # deferred: loads torch (start-up, --help)

        status = run_recipe(
            args.recipe,
            args.out,
            only=args.stage,
            stop_after=args.stop_after,
            device=args.device,
            progress=not args.no_progress,
        )
        print(json.dumps({"recipe": str(args.recipe), "out": str(args.out), "stages": status}))
        return 0
    config = build_config(args)  # a config file is checked whole here, naming the file
    if "data" not in config:
        return _fail("no training data: give --data or a config with 'data'")
    result = Trainer(config, args.out, device=args.device, progress=not args.no_progress).run(
        resume=args.resume, stop_after=args.stop_after
    )
    print(
        json.dumps(
            {**{k: v for k, v in result.items() if k != "best"}, "best_dice": (result["best"] or {}).get("dice")}
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Train; returns the exit code (0 done, 2 failed with one ``error:`` line on stderr, 130
    interrupted outside the training loop; inside it Ctrl-C/SIGTERM save ``last.pt`` and return 0).
    Never raises, so the caller can always end with ``SystemExit(code)``."""
    # Slicer's --python-script passes its own argv; keep what follows the script name.
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    args = None
    try:
        args = parse_args(argv)
        return run(args)
    except SystemExit as exc:  # argparse: --help (0) or a bad option (2, its line already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else _fail(str(exc.code)))
    except KeyboardInterrupt:  # outside the training loop (there the trainer saves last.pt and stops)
        return _fail("interrupted", 130)
    except BaseException as exc:  # noqa: BLE001 - any failure: one line, exit code 2 (Slicer must exit)
        if debug:
            traceback.print_exc()
        try:
            message = describe(exc, getattr(args, "config", None))
        except BaseException:  # noqa: BLE001 - never let the report itself fail
            message = exc.__class__.__name__
        return _fail(message)


if __name__ == "__main__":
    # Always raise SystemExit, success included: a headless Slicer started with
    # --python-script runs this file with __name__ == "__main__" and exits only on SystemExit.
    raise SystemExit(main())

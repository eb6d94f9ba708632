#!/usr/bin/env python
"""Score pose result files against ground truth: median / mean errors and recalls.

Result and ground-truth files hold one test frame per row: 12 numbers, the row-major 3x4
camera-to-world pose in the APR frame (metres), as written by test_refinement.py (``np.savetxt``).

    python eval.py --gt GT.txt --pred PRED.txt [--pred B.txt --name A --name B] [--json OUT.json] [--plot_dir DIR]
    python eval.py --config CFG [--pred PRED.txt]     # GT = the test split of CFG's dataset (APR frame)
    python eval.py --paper_tables [--root paper_result] [--json OUT.json]   # Tables 1 and 2 of the paper

Bad input (missing or malformed file, mismatched pose counts) gives one line and exit code 2.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from config.options import REPO_ROOT, config_parser, parse_args, setup_logging
from core.errors import EvalError, cli_main
from dm import metrics

_logger = logging.getLogger("eval")

DEFAULT_PAPER_ROOT = REPO_ROOT.parent / "shared" / "nefes-reference" / "paper_result"


def build_parser():
    """THE config parser plus the evaluation options (so ``--config`` files work unchanged)."""
    p = config_parser()
    g = p.add_argument_group("evaluation (eval.py)")
    g.add_argument("--gt", type=str, default=None, help="ground-truth pose file (N×12); default with --config: the loader's test split")
    g.add_argument("--pred", type=str, action="append", default=None, help="predicted pose file (N×12); repeat to compare methods")
    g.add_argument("--name", type=str, action="append", default=None, help="label of each --pred, in order (the file name when omitted)")
    g.add_argument("--json", type=str, default=None, help="write the summaries to this JSON file")
    g.add_argument("--plot_dir", type=str, default=None, help="write trajectories.png and error_cdf.png here")
    g.add_argument("--paper_tables", action="store_true", help="recompute Tables 1/2 from a paper_result folder")
    g.add_argument("--root", type=str, default=str(DEFAULT_PAPER_ROOT), help="paper_result folder for --paper_tables")
    g.add_argument("--no_float32", action="store_true", help="score in float64 (the original eval casts poses to float32)")
    return p


def ground_truth(args):
    """(N, 3, 4) GT poses and a description of where they came from: --gt, else the config's test split."""
    if args.gt:
        return metrics.load_pose_file(args.gt), args.gt
    try:
        from dataset_loaders import load_scene  # only this mode needs the data loaders
    except ImportError as e:
        raise EvalError(f"--config mode needs dataset_loaders.load_scene ({e}); pass --gt instead") from None
    scene = load_scene(args)
    return scene.test.poses, f"{args.datadir} (test split)"


def default_prediction(args) -> Path:
    """The refinement result in ``<basedir>/<expname>/`` (test_refinement.py's file name)."""
    folder = Path(args.basedir) / args.expname
    scene = Path(args.datadir).name if args.datadir else "*"
    kind = "pose_pose" if args.pose_only == 3 else "APR_pose"
    expected = folder / f"{args.PoseEstimatorType.rpartition(':')[2]}_{scene}_NeFeS{args.opt_iter}_{kind}_results.txt"
    if expected.is_file():
        return expected
    found = sorted(folder.glob("*_NeFeS*_results.txt"))
    if len(found) == 1:
        return found[0]
    raise EvalError(f"no --pred given and {'several' if found else 'no'} refinement result files match "
                    f"{expected.name} in {folder}; pass --pred FILE")


def score_files(args) -> dict:
    gt, gt_src = ground_truth(args)
    preds = args.pred or [str(default_prediction(args))]
    names = args.name or [Path(p).stem for p in preds]
    if len(names) != len(preds):
        raise EvalError(f"{len(names)} --name for {len(preds)} --pred: give one name per prediction file")
    if len(set(names)) != len(names):
        raise EvalError(f"method names must differ (got {', '.join(names)}): use --name")
    result = {"gt": str(gt_src), "float32": not args.no_float32, "methods": {}}
    poses, errors = {}, {}
    for name, path in zip(names, preds):
        poses[name] = metrics.load_pose_file(path)
        if len(poses[name]) != len(gt):
            raise EvalError(f"{path}: {len(poses[name])} poses, but the ground truth {gt_src} has {len(gt)}")
        errors[name] = metrics.pose_errors(poses[name], gt, cast_float32=not args.no_float32)
        result["methods"][name] = {"pred": str(path), **metrics.summarize(*errors[name])}
    if len(preds) == 1:
        print(metrics.format_summary(result["methods"][names[0]], names[0]))
        result.update(result["methods"][names[0]])  # one method: its summary at the top level too
    else:
        print(metrics.format_table(result["methods"]))
    if args.plot_dir:
        from dm import plots  # matplotlib only when asked for
        plots.plot_trajectories(Path(args.plot_dir) / "trajectories.png", gt, **poses)
        plots.plot_error_cdf(Path(args.plot_dir) / "error_cdf.png", **errors)
    return result


@cli_main
def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv, build_parser())
    if args.paper_tables:
        result = metrics.score_paper_results(args.root)
        print(metrics.format_paper_tables(result))
    elif args.gt or args.config:
        result = score_files(args)
    else:
        raise EvalError("nothing to evaluate: give --gt and --pred, --config CFG [--pred], or --paper_tables")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        _logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

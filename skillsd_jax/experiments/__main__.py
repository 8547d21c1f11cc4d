"""`python -m skillsd_jax.experiments sokoban_cpu [--seeds 0 1 2] [--methods grpo skill_sd] [--out DIR]`

Runs (or resumes) every method x seed of the experiment, then writes `docs/results/<name>.json`,
`docs/results/<name>.png` and the experiment's block in `docs/results.md`. `--report-only` writes
them from the runs that have finished so far, running nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, os.getcwd())  # configs/ lives at the repository root
    from skillsd_jax.experiments import get_experiment, run_experiment
    from skillsd_jax.experiments.report import aggregate, curves_png, markdown_table, update_results_page
    from skillsd_jax.experiments.runner import cold_start, finished_results

    p = argparse.ArgumentParser(prog="python -m skillsd_jax.experiments", description=__doc__.split("\n")[0])
    p.add_argument("experiment", help="experiment name (sokoban_cpu, quick)")
    p.add_argument("--seeds", type=int, nargs="*", default=None, help="subset of the experiment's seeds")
    p.add_argument("--methods", nargs="*", default=None, help="subset of the experiment's methods")
    p.add_argument("--out", default=None, help="run directory (default runs/experiments/<name>)")
    p.add_argument("--docs", default="docs", help="where results.md and results/<name>.{json,png} go")
    p.add_argument("--no-report", action="store_true", help="run only; do not write the results files")
    p.add_argument("--report-only", action="store_true", help="write the results files from the finished runs only")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        exp = get_experiment(args.experiment)
    except ValueError as e:
        p.error(str(e))
    out = args.out or os.path.join("runs", "experiments", exp.name)
    if args.report_only and args.no_report:
        p.error("--report-only and --no-report exclude each other")
    if args.report_only:
        results = finished_results(exp, out, methods=args.methods, seeds=args.seeds)
        if not results:
            p.error(f"no finished runs of {exp.name} under {out}")
    else:
        results = run_experiment(exp, out, methods=args.methods, seeds=args.seeds)
    if args.no_report:
        return 0
    cold = {s: cold_start(exp, s, out)[1] for s in sorted({r["seed"] for r in results})}
    summary = aggregate(exp, results, cold)
    res_dir = os.path.join(args.docs, "results")
    os.makedirs(res_dir, exist_ok=True)
    with open(os.path.join(res_dir, f"{exp.name}.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    png = curves_png(exp, out, cold, os.path.join(res_dir, f"{exp.name}.png"))
    command = "python -m skillsd_jax.experiments " + " ".join(argv if argv is not None else sys.argv[1:])
    update_results_page(os.path.join(args.docs, "results.md"), exp.name,
                        markdown_table(summary, os.path.relpath(png, args.docs), command))
    for method, m in summary["methods"].items():
        spread = f"± {m['std']:.3f}  95% CI [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]" if m["ci95"] else "(no spread)"
        print(f"{method:20s} {m['mean']:.3f} {spread}  ({m['seeds']} seeds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Aggregates an experiment's result records into the results JSON, a Markdown table and one figure.

The JSON (`docs/results/<experiment>.json`) is only ever written here, from the runs' own records:
`{"methods": {method: {"mean", "std", "seeds", "ci95", "per_seed"}}, "paired_vs_grpo": {method: {"diffs",
"mean", "ci95", ...}}, "budget", "config", "commit", ...}` (success rate on the held-out levels of
`budget.eval_split`; `ci95` is the t-interval of the mean over seeds, of the seed-by-seed differences
for the paired entries).
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any, Sequence

from skillsd_jax.experiments.spec import PRIVILEGED, RESULT_FILE, Experiment, run_dir
from skillsd_jax.train.metrics import read_metrics
from skillsd_jax.train.stats import mean_interval, t_quantile_975

BEGIN, END = "<!-- BEGIN {name} (written by python -m skillsd_jax.experiments) -->", "<!-- END {name} -->"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _eval_split(config: Any) -> str:
    """The split the held-out evaluation plays (`test`, or `val` where settings are chosen)."""
    return str(config.env.eval_kwargs.get("split", "test"))


def aggregate(exp: Experiment, results: Sequence[dict[str, Any]], cold: dict[int, dict[str, Any]]) -> dict[str, Any]:
    methods: dict[str, Any] = {}
    for method in exp.methods:
        runs = sorted((r for r in results if r["method"] == method), key=lambda r: r["seed"])
        if not runs:
            continue
        values = [float(r["success"]) for r in runs]
        mean, std, ci = mean_interval(values)
        if len(values) < 2:  # one seed has no spread: report none rather than a zero-width interval
            std, ci = None, None
        methods[method] = {"mean": mean, "std": std, "seeds": len(runs), "ci95": list(ci) if ci else None,
                           "per_seed": [{"seed": r["seed"], "success": r["success"], "ci95": r["ci95"],
                                         "env_steps": r["env_steps"], "iterations": r["iterations"],
                                         "wall_s": r["wall_s"]} for r in runs],
                           "privileged": method in PRIVILEGED}
    cold_values = [float(c["eval"]["eval/success_rate"]) for c in cold.values()]
    config = exp.config(exp.methods[0], 0)
    return {
        "experiment": exp.name, "description": exp.description, "commit": git_commit(),
        "run_commits": sorted({r.get("commit", "unknown") for r in results}),  # a sweep may span several
        "budget": {"env_steps_per_run": int(config.budget_env_steps), "max_iterations": int(config.num_iterations),
                   "test_levels": int(config.eval.num_tasks), "eval_split": _eval_split(config)},
        "cold_start": {"mean": mean_interval(cold_values)[0] if cold_values else None,
                       "per_seed": {str(k): v["eval"]["eval/success_rate"] for k, v in sorted(cold.items())}},
        "config": json.loads(config.to_json_best_effort()),
        "methods": methods,
        "paired": paired(results, "skill_sd", "grpo"),
        # every method against GRPO, seed by seed (the same cold start and budget per seed)
        "paired_vs_grpo": {m: paired(results, m, "grpo") for m in methods if m != "grpo" and "grpo" in methods},
    }


def paired(results: Sequence[dict[str, Any]], a: str, b: str) -> dict[str, Any] | None:
    """Seed-by-seed difference `a - b` (same cold start, same budget), its mean and 95% t-interval."""
    by = {(r["method"], r["seed"]): float(r["success"]) for r in results}
    seeds = sorted(s for (m, s) in by if m == a and (b, s) in by)
    if not seeds:
        return None
    diffs = [by[(a, s)] - by[(b, s)] for s in seeds]
    mean, std, ci = mean_interval(diffs)
    if len(diffs) < 2:
        std, ci = None, None
    return {"a": a, "b": b, "seeds": seeds, "diffs": diffs, "mean": mean, "std": std, "ci95": list(ci) if ci else None,
            "t_quantile": t_quantile_975(len(seeds) - 1) if len(seeds) > 1 else None}


def curve_points(exp: Experiment, out_dir: str, method: str) -> list[list[tuple[float, float]]]:
    """Per evaluation index, the (environment steps, held-out success) of each finished seed's run."""
    points: dict[int, list[tuple[float, float]]] = {}
    for seed in exp.seeds:
        workdir = run_dir(out_dir, method, seed)
        if not os.path.exists(os.path.join(workdir, RESULT_FILE)):
            continue  # finished runs only: a run under way would draw a partial curve
        records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
        # The final evaluation's record may lack the step count: take its iteration's.
        steps_at = {r.get("iteration"): r["progress/env_steps"] for r in records if "progress/env_steps" in r}
        every = exp.config(method, seed).eval.every
        evals: list[tuple[float, float]] = []
        last_it = None
        for r in records:
            if "eval/success_rate" not in r or r.get("iteration", 0) <= 0:
                continue
            pt = (r.get("progress/env_steps", steps_at.get(r.get("iteration"), 0.0)), r["eval/success_rate"])
            # The final evaluation a few iterations past a periodic one (the budget ended the run) takes
            # its place, so the k-th point of every seed is the same stage of training.
            if evals and every > 0 and r["iteration"] - last_it < every / 2:
                evals[-1] = pt
            else:
                evals.append(pt)
            last_it = r["iteration"]
        for k, pt in enumerate(evals):
            points.setdefault(k, []).append(pt)
    return [pts for _, pts in sorted(points.items())]


def curves_png(exp: Experiment, out_dir: str, cold: dict[int, dict[str, Any]], png: str) -> str:
    """Held-out success vs environment steps, mean over seeds per method (cold start at 0 steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    start = [c["eval"]["eval/success_rate"] for c in cold.values()]
    for method in exp.methods:
        points = curve_points(exp, out_dir, method)
        if not points:
            continue
        xs = [0.0] + [sum(p[0] for p in pts) / len(pts) for pts in points]
        ys = [sum(start) / len(start)] + [sum(p[1] for p in pts) / len(pts) for pts in points]
        seeds = max(len(pts) for pts in points)
        ax.plot(xs, ys, marker="o", linestyle="--" if method in PRIVILEGED else "-",
                label=method + (" (privileged)" if method in PRIVILEGED else "") + f", {seeds} seed(s)")
    ax.set_xlabel("environment steps (training rollouts)")
    config = exp.config(exp.methods[0], 0)
    ax.set_ylabel(f"held-out success ({config.eval.num_tasks} {_eval_split(config)} levels)")
    ax.set_title(f"{exp.name}: mean over the finished seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def markdown_table(summary: dict[str, Any], png_rel: str, command: str) -> str:
    temperature = float(summary["config"].get("eval", {}).get("temperature", 0.0))
    episode = f"one episode each, sampled at T={temperature:g}" if temperature > 0 else "one greedy episode each"
    runs_on = ", ".join(f"`{c[:10]}`" for c in summary.get("run_commits", []))
    lines = [f"Experiment `{summary['experiment']}` ({summary['description']}), report written at commit "
             f"`{summary['commit'][:10]}`, runs made at {runs_on or 'unrecorded commits'}; "
             f"budget {summary['budget']['env_steps_per_run']} environment steps per run, "
             f"{summary['budget']['test_levels']} held-out {summary['budget'].get('eval_split', 'test')} levels "
             f"({episode}).",
             "", f"Command: `{command}`", "",
             "| method | success mean ± std | 95% CI (seeds) | seeds | per seed | minus grpo, paired by seed: mean [95% CI] "
             "| wall time per run (s) |",
             "|---|---|---|---|---|---|---|"]
    cold = summary["cold_start"]
    if cold["mean"] is not None:
        lines.append(f"| cold start (before RL) | {cold['mean']:.3f} | | {len(cold['per_seed'])} | "
                     + ", ".join(f"{v:.3f}" for v in cold["per_seed"].values()) + " | | |")
    for method, m in summary["methods"].items():
        label = method + (" *(privileged)*" if m["privileged"] else "")
        per = ", ".join(f"{p['success']:.3f}" for p in m["per_seed"])
        wall = ", ".join(f"{p['wall_s']:.0f}" for p in m["per_seed"])
        spread = (f"{m['mean']:.3f} ± {m['std']:.3f} | [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]" if m["ci95"]
                  else f"{m['mean']:.3f} | n/a (one seed)")
        lines.append(f"| {label} | {spread} | {m['seeds']} | {per} | "
                     f"{_paired_cell(summary.get('paired_vs_grpo', {}).get(method), method)} | {wall} |")
    p = summary.get("paired")
    if p:
        lines += ["", f"Paired by seed, `{p['a']} - {p['b']}`: " + ", ".join(f"{d:+.3f}" for d in p["diffs"])
                  + f"; mean {p['mean']:+.3f}"
                  + (f", 95% CI [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]." if p["ci95"] else " (one seed).")]
    lines += ["", f"![held-out success vs environment steps]({png_rel})"]
    return "\n".join(lines)


def _paired_cell(p: dict[str, Any] | None, method: str) -> str:
    if method == "grpo":
        return "(the reference)"
    if not p:
        return ""
    if not p["ci95"]:
        return f"{p['mean']:+.3f} (one seed)"
    return f"{p['mean']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]"


def update_results_page(page: str, name: str, block: str) -> None:
    """Replaces (or appends) the experiment's generated block in the results page; the rest stays."""
    begin, end = BEGIN.format(name=name), END.format(name=name)
    text = open(page).read() if os.path.exists(page) else "# Results\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + begin + "\n" + block + "\n" + end + tail
    else:
        text = text.rstrip() + f"\n\n{begin}\n{block}\n{end}\n"
    with open(page, "w") as f:
        f.write(text)

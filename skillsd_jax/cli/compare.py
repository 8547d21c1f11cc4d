"""`skillsd-compare`: two policies' success on the same tasks, compared task by task.

    skillsd-eval --config=configs/sokoban.py --checkpoint=runs/a --num_tasks=2048 --answers=a.jsonl
    skillsd-eval --config=configs/sokoban.py:method=grpo --checkpoint=runs/b --num_tasks=2048 --answers=b.jsonl
    skillsd-compare a.jsonl b.jsonl

Reads two `--answers` files, takes each task's success (the mean over its episodes), keeps the tasks
both played, and prints each policy's success rate with its 95% Wilson interval and the paired
difference A - B with its 95% interval (over tasks), and how many tasks only A or only B won. Pairing
by task removes the spread of task difficulty from the difference, which is what makes two runs'
end policies comparable on a few thousand levels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from typing import Any, Sequence

from skillsd_jax.train.stats import mean_interval, wilson_interval


def task_success(path: str) -> dict[str, float]:
    """Success of each task of an answers file: the share of its episodes that were won."""
    episodes: dict[str, tuple[str, bool]] = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
                episodes[record["episode_id"]] = (str(record["task_id"]), bool(record["won"]))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{number} is not an answer record of skillsd-eval --answers ({e})") from None
    by_task: dict[str, list[bool]] = defaultdict(list)
    for task, won in episodes.values():
        by_task[task].append(won)
    return {task: sum(wins) / len(wins) for task, wins in by_task.items()}


def compare(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    """A against B on the tasks both played (see the module docstring)."""
    tasks = sorted(set(a) & set(b))
    if not tasks:
        raise ValueError("the two answer files share no task")
    out: dict[str, Any] = {"tasks": len(tasks), "only_in_a": len(set(a) - set(b)), "only_in_b": len(set(b) - set(a))}
    for name, rates in (("a", a), ("b", b)):
        wins = sum(rates[t] for t in tasks)
        lo, hi = wilson_interval(wins, len(tasks))
        out.update({f"{name}_success_rate": wins / len(tasks), f"{name}_ci95_lo": lo, f"{name}_ci95_hi": hi})
    diff, _, (lo, hi) = mean_interval([a[t] - b[t] for t in tasks])
    out.update({"difference": diff, "difference_ci95_lo": lo, "difference_ci95_hi": hi,
                "tasks_a_better": sum(a[t] > b[t] for t in tasks), "tasks_b_better": sum(a[t] < b[t] for t in tasks)})
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="skillsd-compare", description=__doc__.splitlines()[0])
    parser.add_argument("a", help="answers file of policy A (skillsd-eval --answers)")
    parser.add_argument("b", help="answers file of policy B")
    parser.add_argument("--output", help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    for path in (args.a, args.b):
        if not os.path.isfile(path):
            raise SystemExit(f"{path}: no such answers file")
    try:
        result = compare(task_success(args.a), task_success(args.b))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    r = result
    print(f"{r['tasks']} tasks both played ({r['only_in_a']} only in A, {r['only_in_b']} only in B)")
    for name, path in (("a", args.a), ("b", args.b)):
        print(f"{name.upper()} {path}: success {r[f'{name}_success_rate']:.3f} "
              f"[95% CI {r[f'{name}_ci95_lo']:.3f}, {r[f'{name}_ci95_hi']:.3f}]")
    print(f"A - B, paired by task: {100 * r['difference']:+.1f} points [95% CI {100 * r['difference_ci95_lo']:+.1f}, "
          f"{100 * r['difference_ci95_hi']:+.1f}]; A better on {r['tasks_a_better']} tasks, B on {r['tasks_b_better']}")
    if args.output:
        with open(args.output, "w") as f:
            f.write(json.dumps(result, sort_keys=True) + "\n")
    return result


def run() -> None:
    """Console-script entry (`skillsd-compare`)."""
    main(sys.argv[1:])


if __name__ == "__main__":
    run()

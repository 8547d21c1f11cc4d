"""Runs an experiment: one cold start per seed, then every method x seed from it, resumably.

Layout under `out_dir`:
  cold_start/seed<k>.npz   the warmed-up parameters every method of seed k starts from
  cold_start/seed<k>.json  their held-out evaluation (the curves' first point; parameters without it are
                           evaluated, not warmed up again)
  runs/<method>/seed<k>/   each run's workdir (checkpoints, metrics.jsonl, skills); `result.json` is
                           written when the run's final evaluation ends, and a run with one is skipped.
Interrupted runs resume from their latest checkpoint; the sweep can be spread over several sittings.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Sequence

import jax
import numpy as np

from skillsd_jax.experiments.report import git_commit
from skillsd_jax.experiments.spec import RESULT_FILE, Experiment, run_dir
from skillsd_jax.train.loop import Trainer

log = logging.getLogger(__name__)


def _save_params(path: str, params: Any) -> None:
    leaves = [np.asarray(x) for x in jax.tree.leaves(params)]
    tmp = path + ".tmp.npz"
    np.savez(tmp, *leaves)
    os.replace(tmp, path)


def _load_params(path: str, like: Any) -> Any:
    with np.load(path) as data:
        leaves = [data[f"arr_{i}"] for i in range(len(data.files))]
    structure = jax.tree.structure(like)
    if structure.num_leaves != len(leaves):
        raise ValueError(f"cold start {path} has {len(leaves)} arrays, the model {structure.num_leaves}")
    return jax.tree.unflatten(structure, leaves)


def _write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def cold_start(exp: Experiment, seed: int, out_dir: str) -> tuple[str, dict[str, Any]]:
    """The shared warmed-up parameters of `seed` (made once) and their held-out evaluation."""
    os.makedirs(os.path.join(out_dir, "cold_start"), exist_ok=True)
    npz = os.path.join(out_dir, "cold_start", f"seed{seed}.npz")
    meta = os.path.join(out_dir, "cold_start", f"seed{seed}.json")
    if os.path.exists(npz) and os.path.exists(meta):
        with open(meta) as f:
            return npz, json.load(f)
    cfg = exp.config("grpo", seed)  # the warm-up does not depend on the method
    cfg.checkpoint.resume = False
    t0 = time.perf_counter()
    trainer = Trainer(cfg, workdir=os.path.join(out_dir, "cold_start", f"seed{seed}_work"))
    try:
        if os.path.exists(npz):  # warmed up before (or copied from an experiment with the same warm-up)
            trainer.start_from(_load_params(npz, trainer.state.params))
        else:
            trainer.warm_start()
            _save_params(npz, trainer.state.params)
        evaluation = trainer.evaluate()
    finally:
        trainer.close()
    record = {"seed": seed, "eval": evaluation, "wall_s": time.perf_counter() - t0}
    _write_json(meta, record)
    return npz, record


def run_one(exp: Experiment, method: str, seed: int, out_dir: str, cold_npz: str) -> dict[str, Any]:
    """One method x seed from the shared cold start; its result record (skipped if already written)."""
    workdir = run_dir(out_dir, method, seed)
    result_path = os.path.join(workdir, RESULT_FILE)
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    cfg = exp.config(method, seed)
    cfg.warmstart.steps = 0
    cfg.eval.at_end = True
    t0 = time.perf_counter()
    trainer = Trainer(cfg, workdir=workdir)
    try:
        if trainer.checkpointer.latest() is None:
            trainer.start_from(_load_params(cold_npz, trainer.state.params))
        final = trainer.run()
        env_steps, iterations = trainer.env_steps, trainer.iteration
    finally:
        trainer.close()
    record = {"method": method, "seed": seed, "commit": git_commit(), "success": final.get("eval/success_rate"),
              "ci95": [final.get("eval/success_ci95_lo"), final.get("eval/success_ci95_hi")],
              "episodes": final.get("eval/episodes"), "env_steps": env_steps, "iterations": iterations,
              "wall_s": time.perf_counter() - t0, "eval": {k: v for k, v in final.items() if k.startswith("eval")}}
    _write_json(result_path, record)
    return record


def finished_results(exp: Experiment, out_dir: str, *, methods: Sequence[str] | None = None,
                     seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """The result records of the runs of `exp` that have finished (nothing is run): a report of a
    sweep still under way."""
    records = []
    for seed in (seeds if seeds is not None else exp.seeds):
        for method in (methods or exp.methods):
            path = os.path.join(run_dir(out_dir, method, seed), RESULT_FILE)
            if os.path.exists(path):
                with open(path) as f:
                    records.append(json.load(f))
    return records


def run_experiment(exp: Experiment, out_dir: str, *, methods: Sequence[str] | None = None,
                   seeds: Sequence[int] | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Every (method, seed) of `exp` (or the given subsets); returns the result records."""
    from tqdm import tqdm

    methods = list(methods or exp.methods)
    seeds = list(seeds if seeds is not None else exp.seeds)
    unknown = sorted(set(methods) - set(exp.methods))
    if unknown:
        raise ValueError(f"experiment {exp.name} has no method(s) {unknown}; it has {list(exp.methods)}")
    results = []
    bar = tqdm(total=len(methods) * len(seeds), desc=f"sweep {exp.name}", disable=not progress)
    for seed in seeds:
        npz, _ = cold_start(exp, seed, out_dir)
        for method in methods:
            bar.set_postfix_str(f"{method} seed {seed}")
            results.append(run_one(exp, method, seed, out_dir, npz))
            bar.update(1)
            bar.write(f"{method} seed {seed}: success {results[-1]['success']:.3f} "
                      f"({results[-1]['env_steps']} env steps, {results[-1]['wall_s']:.0f} s)")
    bar.close()
    return results

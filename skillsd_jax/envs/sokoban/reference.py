"""Reference policies that read no observation: what success a policy earns by answering in format
alone. A trained policy should beat them before its success is read as learning where to move.

    python -m skillsd_jax.envs.sokoban.reference --split val --levels 256 --repeats 4
"""

from __future__ import annotations

import argparse
import functools
from typing import Any, Sequence

from skillsd_jax.envs.blind import blind_success_rate
from skillsd_jax.envs.sokoban import make_sokoban
from skillsd_jax.envs.sokoban.room import ACTIONS


def blind_policy_success(seeds: Sequence[int], *, weights: Sequence[float] | None = None, repeats: int = 1,
                         preset: str = "verl_agent", split: str = "test", rng_seed: int = 0,
                         **env_kwargs: Any) -> float:
    """Success rate of a policy that draws every move from the fixed distribution `weights` over
    `ACTIONS` (uniform when None), whatever it sees: `repeats` episodes on each level seed."""
    rate = blind_success_rate(functools.partial(make_sokoban, preset, split=split, **env_kwargs), seeds,
                              weights=weights, repeats=repeats, rng_seed=rng_seed)
    return 0.0 if rate is None else rate


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="verl_agent")
    parser.add_argument("--split", default="test")
    parser.add_argument("--levels", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args(argv)
    seeds = range(args.levels)
    out = {"uniform": blind_policy_success(seeds, repeats=args.repeats, preset=args.preset, split=args.split)}
    for move in ACTIONS:  # always the same move: what a collapsed policy's greedy answer earns
        only = [1.0 if m == move else 0.0 for m in ACTIONS]
        out[f"only_{move}"] = blind_policy_success(seeds, weights=only, preset=args.preset, split=args.split)
    for name, rate in out.items():
        print(f"{name:>12}: {rate:.3f}  ({args.levels} {args.split} levels x {1 if name.startswith('only') else args.repeats})")
    return out


if __name__ == "__main__":
    main()

"""Task seeds: the train and test seeds a run config names, and the iterator choosing which train
seeds each iteration trains on (its state is checkpointed)."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np


@dataclasses.dataclass
class TaskIterator:
    """Shuffled epochs over a finite task list, or a fresh-seed stream when `tasks` is None.

    Deterministic from `seed`; `state_dict()` / `load_state_dict()` resume exactly.
    """

    tasks: Sequence[int] | None
    seed: int = 0
    epoch: int = 0
    position: int = 0
    stream_offset: int = 0  # streaming mode: the next unused seed

    def next(self, n: int) -> list[int]:
        if self.tasks is None:
            out = list(range(self.stream_offset, self.stream_offset + n))
            self.stream_offset += n
            return out
        if not self.tasks:
            raise ValueError("the task list is empty")
        out: list[int] = []
        while len(out) < n:
            order = self._order(self.epoch)
            take = min(n - len(out), len(order) - self.position)
            out.extend(int(order[i]) for i in range(self.position, self.position + take))
            self.position += take
            if self.position == len(order):
                self.epoch, self.position = self.epoch + 1, 0
        return out

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(np.asarray(self.tasks))

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "stream_offset": self.stream_offset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.stream_offset = int(state.get("stream_offset", 0))


def task_seeds(config: Any) -> tuple[list[int] | None, list[int]]:
    """Train task seeds (None: a fresh seed per task) and the `config.eval.num_tasks` test seeds, from
    the task dataset `config.env.task_dataset` when one is set."""
    env, num_eval = config.env, config.eval.num_tasks
    if env.task_dataset:
        from skillsd_jax.data import load_task_split

        if not env.data_dir:
            raise ValueError("config.env.task_dataset needs config.env.data_dir")
        try:
            train = [int(r["seed"]) for r in load_task_split(env.task_dataset, "train", env.data_dir)]
            test = [int(r["seed"]) for r in load_task_split(env.task_dataset, "test", env.data_dir)]
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"config.env.task_dataset={env.task_dataset!r} is not readable in "
                             f"{env.data_dir}: {e} (build it with `python -m skillsd_jax.data ...`)") from None
        return train, test[:num_eval]
    train = list(range(env.num_train_tasks)) if env.num_train_tasks > 0 else None
    return train, list(range(num_eval))

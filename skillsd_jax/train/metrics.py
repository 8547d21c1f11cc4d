"""Metrics: a JSONL log per run, TensorBoard event files, optional Weights & Biases, a console line per
iteration, and plots a person can look at."""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Iterable

import numpy as np

log = logging.getLogger(__name__)

PLOT_KEYS = (("train/success_rate", "eval/success_rate"), ("train/return_mean", "eval/return_mean"),
             ("loss/grpo_loss", "loss/sdl_loss"), ("loss/sdl_gap", "skills/tasks_with_skill"))
TENSORBOARD_DIR = "tensorboard"
WANDB_ID_FILE = "wandb_run_id"
WANDB_MODES = ("online", "offline", "disabled")


class MetricsWriter:
    """Writes each iteration's metrics to `<workdir>/metrics.jsonl` and, when asked, to TensorBoard event
    files in `<workdir>/tensorboard` and to a Weights & Biases run (resumed with the workdir)."""

    def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = False, wandb: bool = False,
                 wandb_project: str = "skillsd_jax", wandb_entity: str = "", wandb_mode: str = "online",
                 wandb_run_name: str = "", run_config: dict[str, Any] | None = None):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self.tensorboard_dir = os.path.join(workdir, TENSORBOARD_DIR) if tensorboard else None
        self._tb = None
        self._tb_purge_step: int | None = None
        self._wandb_run = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        if wandb:
            if wandb_mode not in WANDB_MODES:
                raise ValueError(f"config.metrics.wandb_mode must be one of {WANDB_MODES}, got {wandb_mode!r}")
            self._wandb_run = _start_wandb(workdir, project=wandb_project, entity=wandb_entity, mode=wandb_mode,
                                           name=wandb_run_name or os.path.basename(os.path.abspath(workdir)),
                                           config=run_config)

    @classmethod
    def from_config(cls, workdir: str, metrics_cfg: Any, *, enabled: bool = True,
                    run_config: dict[str, Any] | None = None) -> "MetricsWriter":
        """From a run config's `metrics` section (see configs/common.py)."""
        return cls(workdir, enabled=enabled, tensorboard=bool(metrics_cfg.tensorboard), wandb=bool(metrics_cfg.wandb),
                   wandb_project=metrics_cfg.wandb_project, wandb_entity=metrics_cfg.wandb_entity,
                   wandb_mode=metrics_cfg.wandb_mode, wandb_run_name=metrics_cfg.wandb_run_name,
                   run_config=run_config)

    def write(self, iteration: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        plain = {k: _plain(v) for k, v in metrics.items()}
        row = {"iteration": int(iteration), **plain}
        with open(self.path, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
        scalars = {k: float(v) for k, v in plain.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tensorboard_dir is not None:
            writer = self._tensorboard()
            for key, value in scalars.items():
                writer.add_scalar(key, value, global_step=int(iteration))
            writer.flush()  # an iteration takes seconds: curves appear in TensorBoard as it ends
        if self._wandb_run is not None:
            self._wandb_run.log(scalars, step=int(iteration))

    def truncate_after(self, iteration: int) -> None:
        """On resume: drop rows logged after the checkpoint, so curves have no duplicates."""
        if not self.enabled:
            return
        # TensorBoard drops events from `iteration + 1` on when the resumed run writes its first one.
        self._tb_purge_step = int(iteration) + 1
        if not os.path.exists(self.path):
            return
        rows = [r for r in read_metrics(self.path) if r.get("iteration", 0) <= iteration]
        with open(self.path, "w") as f:
            for r in rows:
                f.write(json.dumps(r, sort_keys=True) + "\n")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None

    def _tensorboard(self):
        if self._tb is None:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(self.tensorboard_dir, purge_step=self._tb_purge_step)
        return self._tb


def _start_wandb(workdir: str, *, project: str, entity: str, mode: str, name: str, config: dict[str, Any] | None):
    """A W&B run that a resumed training run continues (its id is kept in the workdir)."""
    try:
        import wandb
    except ImportError:
        raise ValueError("config.metrics.wandb=True needs the wandb package: pip install wandb") from None
    id_path = os.path.join(workdir, WANDB_ID_FILE)
    if os.path.exists(id_path):
        with open(id_path) as f:
            run_id = f.read().strip()
    else:
        run_id = wandb.util.generate_id()
        with open(id_path, "w") as f:
            f.write(run_id)
    return wandb.init(project=project, entity=entity or None, name=name, id=run_id, resume="allow", dir=workdir,
                      mode=mode, config=config)


def _plain(v: Any) -> Any:
    try:
        v = np.asarray(v).item()
    except (ValueError, TypeError):
        return v
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def read_metrics(path: str) -> list[dict[str, Any]]:
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    log.warning("skipping a corrupt line in %s", path)
    return rows


def format_line(iteration: int, m: dict[str, Any], keys: Iterable[str]) -> str:
    parts = [f"it {iteration}"]
    for k in keys:
        if k in m and m[k] is not None:
            group, _, name = k.rpartition("/")
            label = f"eval_{name}" if group == "eval" else name
            parts.append(f"{label} {float(m[k]):.4g}")
    return " | ".join(parts)


def plot_metrics(metrics_path: str, out_png: str) -> str | None:
    """Learning curves (return, success, losses) as a PNG; returns its path (None without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plot")
        return None
    rows = read_metrics(metrics_path)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, keys in zip(axes.flat, PLOT_KEYS):
        for key in keys:
            pts = [(r["iteration"], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, marker="." if len(pts) < 50 else None, label=key)
        ax.set_xlabel("iteration")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(os.path.basename(os.path.dirname(os.path.abspath(metrics_path))))
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png

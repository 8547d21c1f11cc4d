"""The six steps of one training iteration, each a function that runs without a `Trainer`:

  1. `rollout`    B tasks x G episodes with the acting policy and prompt;
  2. `credit`     group the episodes by task and credit the skills used on those tasks before;
  3. `make_batch` student rows, teacher rows under their guidance, advantages, the teacher's and
                  the old policy's log-probs (scored with the pre-update parameters);
  4. `update`     jitted `train_step`s: one on all rows, or PPO-style minibatches x epochs;
  5. teacher sync (`state.sync_teacher`, jitted by the caller);
  6. `summarize`  hand the finished groups to the asynchronous summarizer.

`Trainer.train_iteration` (loop.py) is these calls in order.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any, Callable, Sequence

import jax
import numpy as np

from skillsd_jax.agent import Episode, PromptBuilder, build_rows, row_advantages, token_advantages
from skillsd_jax.train.batch import TrainBatch
from skillsd_jax.train.evaluate import episode_metrics
from skillsd_jax.train.methods import Method
from skillsd_jax.train.returns import AdvantageConfig, advantages, episode_returns, step_advantages
from skillsd_jax.train.rollout_correction import RolloutCorrectionConfig, rollout_weights

log = logging.getLogger(__name__)
ScoreFn = Callable[[Any, np.ndarray, np.ndarray], Any]  # (params, ids [B,T], mask [B,T]) -> log-probs [B,T]


# ---------------------------------------------------------------------------------------- 1. rollout
def rollout(engine: Any, params: Any, seeds: Sequence[int], group_size: int, *, seed: int, prefix: str,
            guidance: Callable[[Episode], str] | None = None) -> tuple[list[Episode], dict[str, float]]:
    """Episodes of `group_size` per task seed, and their statistics as `train/*` and `rollout/*` metrics."""
    episodes, stats = engine.run(params, list(seeds), group_size, seed=seed, episode_prefix=prefix,
                                 guidance=guidance)
    return episodes, {**episode_metrics(episodes, "train"), **stats.as_metrics()}


# ---------------------------------------------------------------------------------------- 2. credit
def credit(tracker: Any, episodes: Sequence[Episode], iteration: int) -> dict[str, list[Episode]]:
    """Finished (non-crashed) episodes by task; each task's group credits its earlier skill uses."""
    groups: dict[str, list[Episode]] = collections.defaultdict(list)
    for ep in episodes:
        if ep.error is None:
            groups[ep.task_id].append(ep)
    if tracker is not None:
        for task_id, group in groups.items():
            tracker.observe_group(task_id, iteration, [e.total_reward for e in group], [e.won for e in group])
    return dict(groups)


# ---------------------------------------------------------------------------------------- 3. batch
@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """Static choices of how episodes become a `TrainBatch`."""

    layout: str = "per_step"  # per_step | trajectory rows
    sdl_on: bool = False  # the method has a teacher term with a non-zero coefficient (decided once)
    full_vocab_teacher: bool = False  # the step computes teacher logits itself (full_vocab / topk SDL)
    recompute_old_logp: bool = False  # old log-probs from the trainer instead of the sampler
    row_multiple: int = 1
    length_quantum: int = 64
    max_length: int | None = None
    advantage: AdvantageConfig = AdvantageConfig()
    correction: RolloutCorrectionConfig = RolloutCorrectionConfig()


@dataclasses.dataclass
class Scoring:
    """The forward-only scorer and the parameters it scores with, all taken before the update."""

    score: ScoreFn
    params: Any  # the policy (old log-probs when recomputed)
    teacher: Any  # the teacher's parameters (theta_bar)
    reference: Any = None  # the KL reference, when the loss has a KL term


def make_batch(episodes: Sequence[Episode], method: Method, prompts: PromptBuilder,
               guide: Callable[[str, Episode], str], scoring: Scoring,
               spec: BatchSpec) -> tuple[TrainBatch, dict[str, float]]:
    """Rows (student + teacher), advantages and every per-token constant of the update."""
    # Rows keep the sampled prompts unless the method trains under another prompt than it acted with
    # (off-policy: acted with skills, trained plain).
    student_guide = (None if method.act_guidance == method.student_guidance
                     else (lambda ep: guide(method.student_guidance, ep)))
    teacher_guide = (lambda ep: guide(method.teacher_guidance, ep)) if spec.sdl_on else (lambda ep: "")
    rows = build_rows(episodes, prompts, spec.layout, teacher_guidance=teacher_guide, student_guidance=student_guide,
                      row_multiple=spec.row_multiple, length_quantum=spec.length_quantum, max_length=spec.max_length)
    returns, groups, valid = episode_returns(episodes, spec.advantage)
    ep_adv = advantages(returns, groups, valid, spec.advantage)
    metrics: dict[str, float] = {"rows/count": float(rows.num_real),
                                 "rows/tokens": float(rows.attention_mask.sum()),
                                 "advantage/abs_mean": float(np.abs(ep_adv[valid]).mean()) if valid.any() else 0.0,
                                 "advantage/zero_frac": float((np.abs(ep_adv[valid]) < 1e-6).mean())
                                 if valid.any() else 0.0}
    if spec.advantage.step_weight > 0:
        per_turn, step_metrics = step_advantages(episodes, groups, valid, spec.advantage)
        metrics.update(step_metrics)
        adv = token_advantages(rows, ep_adv, per_turn, spec.advantage.step_weight)
    else:
        adv = row_advantages(rows, ep_adv)

    sampler_logp = rows.old_logp
    old_logp, weights = sampler_logp, None
    if spec.recompute_old_logp:
        old_logp = np.asarray(scoring.score(scoring.params, rows.input_ids, rows.attention_mask)) * rows.loss_mask
        weights, corr = rollout_weights(old_logp, sampler_logp, rows.loss_mask, spec.correction)
        metrics.update(corr)

    sdl_rows = rows.has_guidance if spec.sdl_on else np.zeros_like(rows.has_guidance)
    teacher_logp = np.zeros_like(old_logp)
    if spec.sdl_on and sdl_rows.any():
        full = scoring.score(scoring.teacher, rows.teacher_ids, rows.teacher_attention_mask)
        teacher_logp = rows.teacher_aligned(np.asarray(full))
        metrics.update(teacher_gain_metrics(teacher_logp - old_logp, rows.loss_mask * sdl_rows[:, None],
                                            rows.episode_index, episodes))
    metrics["rows/sdl_rows"] = float(sdl_rows.sum())
    metrics["rows/sdl_tokens"] = float((rows.loss_mask * sdl_rows[:, None]).sum())
    full_vocab = spec.sdl_on and spec.full_vocab_teacher
    batch = TrainBatch(
        input_ids=rows.input_ids, attention_mask=rows.attention_mask, loss_mask=rows.loss_mask,
        old_logp=old_logp.astype(np.float32), teacher_logp=teacher_logp.astype(np.float32),
        advantages=adv, sdl_mask=sdl_rows.astype(np.float32),
        ref_logp=(np.asarray(scoring.score(scoring.reference, rows.input_ids, rows.attention_mask)) * rows.loss_mask
                  if scoring.reference is not None else None),
        rollout_weights=weights,
        teacher_ids=rows.teacher_ids if full_vocab else None,
        teacher_attention_mask=rows.teacher_attention_mask if full_vocab else None,
        teacher_index=rows.teacher_index if full_vocab else None)
    batch.validate()
    metrics["rows/padded_shape"] = f"{rows.input_ids.shape[0]}x{rows.input_ids.shape[1]}"  # type: ignore[assignment]
    return batch, metrics


def teacher_gain_metrics(gain: np.ndarray, on: np.ndarray, episode_index: np.ndarray,
                         episodes: Sequence[Episode]) -> dict[str, float]:
    """Mean teacher-minus-student log-prob of the student's own tokens on teacher rows, overall and
    split by whether the row's episode was won.

    Over tokens the student sampled itself the overall mean estimates -KL(student || teacher) <= 0
    (docs/algorithm.md): it cannot be positive in expectation whatever the teacher knows. What shows
    a teacher that reads skills is the split: its log-probs rise on the tokens of won episodes
    (`_won` > 0) and fall on the others, i.e. it moves probability toward what worked."""
    won = np.array([bool(episodes[i].won) if i >= 0 else False for i in episode_index], bool)
    out = {"teacher/skill_logp_gain": float((gain * on).sum() / max(on.sum(), 1.0))}
    for name, mask in (("won", on * won[:, None]), ("lost", on * ~won[:, None])):
        if mask.sum() > 0:  # absent rather than NaN when no row of that kind had a teacher
            out[f"teacher/skill_logp_gain_{name}"] = float((gain * mask).sum() / mask.sum())
    return out


# ---------------------------------------------------------------------------------------- 4. update
def update(step_fn: Callable, state: Any, batch: TrainBatch, *, minibatches: int = 1, epochs: int = 1,
           rng: np.random.Generator | None = None, put: Callable[[TrainBatch], TrainBatch] | None = None
           ) -> tuple[Any, Any]:
    """`epochs` passes over the batch's rows in `minibatches` shuffled parts, one jitted step each
    (PPO-style: the old log-probs stay those of the rollout, so later steps are clipped against them);
    returns the new state and the steps' mean metrics (on the host). The default is one step on everything.

    `put` moves a (host) part onto the devices, e.g. with the batch shardings of a mesh."""
    put = put or (lambda b: b)
    if minibatches == 1 and epochs == 1:
        return step_fn(state, put(batch))
    n = int(np.shape(batch.input_ids)[0])
    if n % minibatches:
        raise ValueError(f"{n} rows do not split into {minibatches} minibatches (rows are padded to a multiple "
                         "of micro_batches x data-parallel size x ppo.minibatches)")
    rng = rng if rng is not None else np.random.default_rng(0)
    host = jax.tree.map(np.asarray, batch)
    history = []
    for _ in range(epochs):
        for part in np.split(rng.permutation(n), minibatches):
            state, m = step_fn(state, put(jax.tree.map(lambda x: x[part], host)))
            # Fetched before the next step: combining the steps' metrics on the devices would put small
            # programs between two collective ones, which can deadlock XLA:CPU's host-device rendezvous.
            history.append(jax.device_get(m))
    return state, jax.tree.map(lambda *xs: float(np.mean(xs)), *history)


# ---------------------------------------------------------------------------------------- 6. summarize
def summarize(summarizer: Any, bank: Any, groups: dict[str, list[Episode]], iteration: int, *,
              per_episode: bool = False, max_untried: int = 0) -> dict[str, float]:
    """Submits the finished groups (or each episode, with `per_episode`) to the async summarizer.

    A task that already has `max_untried` skills waiting for their first credit gets no new one this
    time (0: no limit): otherwise UCB, which tries untried skills first, would only ever pick the
    newest skill and never compare them.
    """
    skipped = 0
    for task_id, group in groups.items():
        if max_untried > 0 and sum(s.count == 0 for s in bank.skills(task_id)) >= max_untried:
            skipped += 1
            continue
        for part in ([[e] for e in group] if per_episode else [group]):
            summarizer.submit(part, step=iteration)
    stats = summarizer.stats()
    out = {f"skills/{k}": float(v) for k, v in stats.items() if isinstance(v, (int, float))}
    out.update({f"skills/backend_{k}": float(v) for k, v in stats.get("backend", {}).items()
                if isinstance(v, (int, float))})
    out["skills/summaries_skipped_untried"] = float(skipped)
    out["skills/bank_size"] = float(len(bank))
    return out

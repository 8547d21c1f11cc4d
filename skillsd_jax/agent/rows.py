"""Episodes -> training rows, each with its teacher row (same response tokens, aligned positions).

Layouts:
  - "per_step" (verl-agent): one row per turn, `[turn prompt, response]`; the episode's advantage is
    credited to every row of the episode.
  - "trajectory" (RAGEN): one row per episode, `[prompt, a1, o1, a2, o2, ...]` exactly as sampled;
    the loss mask is 1 on the model's tokens only.

The teacher row replaces the (first) prompt by the prompt with a guidance block on top and keeps
every later token identical; `teacher_index[b, t]` is the teacher-row position of student token
`[b, t]`. Tokens are never re-tokenized: rows concatenate the sampled ids. Shapes are padded to
buckets (2^k or 1.5 * 2^k, multiples of `row_multiple` rows and `length_quantum` tokens) so the train step
compiles a handful of programs per run.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from skillsd_jax.agent.episode import Episode
from skillsd_jax.agent.prompts import PromptBuilder


@dataclasses.dataclass
class Rows:
    input_ids: np.ndarray  # [R, T] int32
    attention_mask: np.ndarray  # [R, T] int32
    loss_mask: np.ndarray  # [R, T] float32
    old_logp: np.ndarray  # [R, T] float32 sampler log-probs at response tokens
    teacher_ids: np.ndarray  # [R, Tt] int32
    teacher_attention_mask: np.ndarray  # [R, Tt] int32
    teacher_index: np.ndarray  # [R, T] int32 (0 off the loss mask)
    episode_index: np.ndarray  # [R] int32 (-1 for padding rows)
    turn_index: np.ndarray  # [R, T] int32: the episode turn of each response token (-1 elsewhere)
    has_guidance: np.ndarray  # [R] float32: 1 where the teacher prompt carries a guidance block
    num_real: int

    def teacher_aligned(self, teacher_logp_full: np.ndarray) -> np.ndarray:
        """Teacher log-probs gathered onto student positions (`[R, T]`, 0 off the loss mask)."""
        out = np.take_along_axis(np.asarray(teacher_logp_full), self.teacher_index, axis=1)
        return (out * self.loss_mask).astype(np.float32)


def _bucket(n: int, quantum: int) -> int:
    """Smallest of {2^k, 1.5 * 2^k} >= n, at least `quantum` and a multiple of it.

    Two buckets per octave bound padding to 33% while a run still compiles only a few shapes.
    """
    n = max(n, 1)
    p = 1 << (n - 1).bit_length()  # next power of two
    b = 3 * p // 4 if p >= 4 and 3 * p // 4 >= n else p
    b = max(quantum, b)
    return -(-b // quantum) * quantum


def build_rows(episodes: Sequence[Episode], prompts: PromptBuilder, layout: str, *,
               teacher_guidance: Callable[[Episode], str], student_guidance: Callable[[Episode], str] | None = None,
               row_multiple: int = 1, length_quantum: int = 64, max_length: int | None = None) -> Rows:
    """Rows for every non-errored episode with at least one turn.

    `teacher_guidance(ep)` is the block on top of the teacher prompt ("" = no teacher signal for that
    row). `student_guidance` None keeps the prompts exactly as sampled (on-policy); otherwise the student
    prompts are rebuilt with that guidance (off-policy rollouts trained under the plain prompt).
    Rows longer than `max_length` are cut from the left of the response region (never the prompt).
    """
    students: list[tuple[list[int], list[float], list[float]]] = []  # ids, loss mask, old logp
    turn_of: list[list[int]] = []  # per student token: its turn (-1 off the responses)
    teachers: list[tuple[list[int], int]] = []  # teacher ids, offset of shared tokens
    ep_index: list[int] = []
    guided: list[float] = []
    for e, ep in enumerate(episodes):
        if ep.error is not None or not ep.turns:
            continue
        guide = teacher_guidance(ep)
        if layout == "per_step":
            for k, turn in enumerate(ep.turns):
                s_prompt = (list(turn.prompt_ids) if student_guidance is None
                            else prompts.turn_prompt(ep, k, turn.observation, student_guidance(ep)))
                t_prompt = prompts.turn_prompt(ep, k, turn.observation, guide) if guide else s_prompt
                ids = s_prompt + list(turn.response_ids)
                mask = [0.0] * len(s_prompt) + [1.0] * len(turn.response_ids)
                logp = [0.0] * len(s_prompt) + list(turn.response_logprobs)
                students.append((ids, mask, logp))
                turn_of.append([-1] * len(s_prompt) + [k] * len(turn.response_ids))
                teachers.append((t_prompt + list(turn.response_ids), len(t_prompt) - len(s_prompt)))
                ep_index.append(e)
                guided.append(1.0 if guide else 0.0)
        elif layout == "trajectory":
            first = (list(ep.turns[0].prompt_ids) if student_guidance is None
                     else prompts.first_prompt(ep, student_guidance(ep)))
            t_first = prompts.first_prompt(ep, guide) if guide else first
            ids, mask, logp = list(first), [0.0] * len(first), [0.0] * len(first)
            turns = [-1] * len(first)
            for k, turn in enumerate(ep.turns):
                if k > 0:
                    ids += turn.prompt_ids
                    mask += [0.0] * len(turn.prompt_ids)
                    logp += [0.0] * len(turn.prompt_ids)
                    turns += [-1] * len(turn.prompt_ids)
                ids += turn.response_ids
                mask += [1.0] * len(turn.response_ids)
                logp += turn.response_logprobs
                turns += [k] * len(turn.response_ids)
            students.append((ids, mask, logp))
            turn_of.append(turns)
            teachers.append((t_first + ids[len(first):], len(t_first) - len(first)))
            ep_index.append(e)
            guided.append(1.0 if guide else 0.0)
        else:
            raise ValueError(f"unknown row layout {layout!r}")

    if max_length is not None:
        for r, (ids, mask, logp) in enumerate(students):
            if len(ids) > max_length:  # drop the row's tail: keeps prompt/response alignment simple
                students[r] = (ids[:max_length], mask[:max_length], logp[:max_length])
                turn_of[r] = turn_of[r][:max_length]
                t_ids, off = teachers[r]
                teachers[r] = (t_ids[:max_length + off], off)

    n = len(students)
    rows = _bucket(max(n, 1), row_multiple)
    t = _bucket(max([len(s[0]) for s in students] or [1]), length_quantum)
    tt = _bucket(max([len(x[0]) for x in teachers] or [1]), length_quantum)
    out = Rows(input_ids=np.zeros((rows, t), np.int32), attention_mask=np.zeros((rows, t), np.int32),
               loss_mask=np.zeros((rows, t), np.float32), old_logp=np.zeros((rows, t), np.float32),
               teacher_ids=np.zeros((rows, tt), np.int32), teacher_attention_mask=np.zeros((rows, tt), np.int32),
               teacher_index=np.zeros((rows, t), np.int32), episode_index=np.full((rows,), -1, np.int32),
               turn_index=np.full((rows, t), -1, np.int32),
               has_guidance=np.zeros((rows,), np.float32), num_real=n)
    for r, ((ids, mask, logp), (t_ids, off)) in enumerate(zip(students, teachers)):
        L = len(ids)
        out.input_ids[r, :L] = ids
        out.attention_mask[r, :L] = 1
        out.loss_mask[r, :L] = mask
        out.old_logp[r, :L] = logp
        out.teacher_ids[r, :len(t_ids)] = t_ids
        out.teacher_attention_mask[r, :len(t_ids)] = 1
        pos = np.arange(L) + off
        out.teacher_index[r, :L] = np.where(np.asarray(mask) > 0, pos, 0)
        out.episode_index[r] = ep_index[r]
        out.turn_index[r, :L] = turn_of[r]
        out.has_guidance[r] = guided[r]
    out.loss_mask[:, 0] = 0.0  # the first token has no context (never a response token in practice)
    out.turn_index[:, 0] = -1
    return out


def row_advantages(rows: Rows, episode_advantages: np.ndarray) -> np.ndarray:
    """Each row gets its episode's advantage; padding rows get 0."""
    adv = np.zeros(rows.episode_index.shape, np.float32)
    real = rows.episode_index >= 0
    adv[real] = np.asarray(episode_advantages, np.float32)[rows.episode_index[real]]
    return adv


def token_advantages(rows: Rows, episode_advantages: np.ndarray, turn_advantages: Sequence[np.ndarray],
                     turn_weight: float) -> np.ndarray:
    """`[R, T]` advantages: each token its episode's advantage plus `turn_weight` times its turn's
    (`turn_advantages[e][k]` for turn k of episode e); padding rows 0."""
    adv = np.zeros(rows.input_ids.shape, np.float32)
    episode_advantages = np.asarray(episode_advantages, np.float32)
    for r in np.flatnonzero(rows.episode_index >= 0):
        e = rows.episode_index[r]
        adv[r] = episode_advantages[e]
        on = rows.turn_index[r] >= 0
        adv[r, on] += turn_weight * np.asarray(turn_advantages[e], np.float32)[rows.turn_index[r, on]]
    return adv

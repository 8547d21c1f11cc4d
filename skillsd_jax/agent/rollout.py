"""The multi-turn rollout: B tasks x G episodes, one batched sampler call per turn over all live episodes.

Two layouts:
  - "per_step": every turn's prompt is rebuilt (instructions + task + last `history_length` pairs +
    current observation) and generated from scratch.
  - "trajectory": one growing sequence per episode `[prompt, a1, o1, a2, ...]`; each turn appends the
    observation tokens to the cached prefix and continues (KV cache reused, token-in/token-out).

In both, the prompts' common start (the environment's instructions) is prefilled once per rollout and
shared by every row (`share_prefix`); the per-step layout keeps it for every turn whose prompts still
start with it, and prefills a new one only when they do not.

Environments step in parallel in an `EnvPool`; a crashing environment ends only its episode
(`Episode.error`), which is then excluded from the loss.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Sequence


from skillsd_jax.agent.episode import Episode, Turn
from skillsd_jax.agent.prompts import TURN_END, PromptBuilder, stop_strings
from skillsd_jax.envs.pool import EnvPool
from skillsd_jax.models.tokenizer import stop_ids
from skillsd_jax.sampling import Prefix, Sampler, SamplingParams

log = logging.getLogger(__name__)
LAYOUTS = ("per_step", "trajectory")
MIN_SHARED_PREFIX_TOKENS = 16  # shorter common starts are not worth a separate prefill
_INFO_KEYS = ("won", "action_valid", "action", "task_id", "boxes_on_target", "em", "f1", "score", "lost",
              "truncated")


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    layout: str = "per_step"
    max_turns: int = 0  # 0: the environment's own max_turns
    max_response_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_context_tokens: int = 4096  # trajectory layout: an episode longer than this is truncated
    compact_below: float = 0.5  # trajectory layout: shrink the batch when fewer rows than this are live
    share_prefix: bool = True  # prefill the prompts' common start once and share it across rows

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"rollout.layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.max_response_tokens < 1:
            raise ValueError("rollout.max_response_tokens must be >= 1")


@dataclasses.dataclass
class RolloutStats:
    sample_s: float = 0.0
    env_s: float = 0.0
    total_s: float = 0.0
    env_steps: int = 0
    generated_tokens: int = 0
    env_errors: int = 0
    truncated: int = 0

    @property
    def glue_s(self) -> float:
        return max(self.total_s - self.sample_s - self.env_s, 0.0)

    def as_metrics(self) -> dict[str, float]:
        total = max(self.total_s, 1e-9)
        return {"rollout/seconds": self.total_s, "rollout/env_steps_per_s": self.env_steps / total,
                "rollout/sample_share": self.sample_s / total, "rollout/env_share": self.env_s / total,
                "rollout/glue_share": self.glue_s / total, "rollout/generated_tokens": float(self.generated_tokens),
                "rollout/env_errors": float(self.env_errors), "rollout/truncated": float(self.truncated)}


class RolloutEngine:
    """Runs groups of episodes of one environment with the current policy parameters."""

    def __init__(self, sampler: Sampler, tokenizer: Any, pool: EnvPool, prompts: PromptBuilder, env_name: str,
                 env_max_turns: int, config: RolloutConfig = RolloutConfig()):
        self.sampler = sampler
        self.tokenizer = tokenizer
        self.pool = pool
        self.prompts = prompts
        self.env_name = env_name
        self.config = config
        self.max_turns = config.max_turns or env_max_turns
        stops = tuple(tuple(tokenizer.encode(s, add_special_tokens=False)) for s in stop_strings(env_name))
        self.sampling = SamplingParams.make(config.temperature, config.top_k, config.top_p,
                                            stop_token_ids=stop_ids(tokenizer), stop_sequences=stops)
        self._turn_end_ids = set(stop_ids(tokenizer))

    def run(self, params: Any, seeds: Sequence[int], group_size: int, *, seed: int = 0, episode_prefix: str = "ep",
            guidance: Callable[[Episode], str] | None = None) -> tuple[list[Episode], RolloutStats]:
        """Plays `group_size` episodes of each task seed. `guidance(episode)` (optional) prepends a block
        to the acting prompt (skill-augmented GRPO, off-policy teacher rollouts); by default the plain prompt."""
        t_start = time.perf_counter()
        stats = RolloutStats()
        n = len(seeds) * group_size
        if n > self.pool.num_envs:
            raise ValueError(f"rollout of {n} episodes needs {n} environments; the pool has {self.pool.num_envs}")
        episodes: list[Episode] = []
        t0 = time.perf_counter()
        results = self.pool.reset([(i, int(seeds[i // group_size])) for i in range(n)])
        stats.env_s += time.perf_counter() - t0
        observations: list[str] = []
        for i, res in enumerate(results):
            task_seed = int(seeds[i // group_size])
            ep = Episode(episode_id=f"{episode_prefix}/{i // group_size}/{i % group_size}", env_name=self.env_name,
                         task_id=str(res.info.get("task_id", "")), seed=task_seed, initial_observation=res.observation,
                         initial_info=dict(res.info), group_id=i // group_size, error=res.error)
            if res.error:
                stats.env_errors += 1
            episodes.append(ep)
            observations.append(res.observation)
        live = [i for i, ep in enumerate(episodes) if ep.error is None]
        guide = [guidance(ep) if guidance else "" for ep in episodes]
        session = None
        prefix: Prefix | None = None
        row_of: dict[int, int] = {}  # episode -> row in the sampler session (trajectory layout)
        for k in range(self.max_turns):
            if not live:
                break
            t0 = time.perf_counter()
            if self.config.layout == "per_step":
                prompts = [self.prompts.turn_prompt(episodes[i], k, observations[i], guide[i]) for i in live]
                prefix = self._shared_prefix(params, prompts, prefix)
                comps = self.sampler.generate(params, prompts, max_new_tokens=self.config.max_response_tokens,
                                              sampling=self.sampling, seed=seed * 100_003 + k, prefix=prefix)
                chunk_of = dict(zip(live, prompts))
            else:
                session, comps, chunk_of, row_of = self._trajectory_turn(params, session, row_of, episodes, live,
                                                                         observations, guide, k, seed)
            stats.sample_s += time.perf_counter() - t0
            texts = [self.tokenizer.decode(c.tokens, skip_special_tokens=True) for c in comps]
            t0 = time.perf_counter()
            step_results = self.pool.step(list(zip(live, texts)))
            stats.env_s += time.perf_counter() - t0
            stats.env_steps += len(live)
            still = []
            for i, c, text, res in zip(live, comps, texts, step_results):
                ep = episodes[i]
                stats.generated_tokens += len(c.tokens)
                info = {key: res.info[key] for key in _INFO_KEYS if key in res.info}
                turn = Turn(observation=observations[i], response_text=text, action=res.info.get("action"),
                            action_valid=bool(res.info.get("action_valid", False)), reward=float(res.reward),
                            done=bool(res.done), info=info, prompt_ids=list(chunk_of[i]), response_ids=list(c.tokens),
                            response_logprobs=[float(x) for x in c.logprobs], stop_reason=c.stop_reason)
                ep.turns.append(turn)
                if res.error:
                    ep.error = res.error
                    stats.env_errors += 1
                    continue
                ep.won = bool(res.info.get("won", False))
                observations[i] = res.observation
                if res.done:
                    continue
                if self.config.layout == "trajectory" and session is not None and \
                        int(session.lengths[row_of[i]]) >= self.config.max_context_tokens:
                    turn.info["truncated"] = True
                    stats.truncated += 1
                    continue
                still.append(i)
            live = still
        for i in live:  # ran out of turns
            if episodes[i].turns:
                episodes[i].turns[-1].info["truncated"] = True
        stats.total_s = time.perf_counter() - t_start
        return episodes, stats

    def _shared_prefix(self, params, prompts: Sequence[Sequence[int]], current: Prefix | None) -> Prefix | None:
        """`current` while every prompt still extends it, else a fresh prefill of the prompts' common start."""
        if not self.config.share_prefix:
            return None
        if current is not None and all(len(p) > len(current.tokens) and tuple(p[:len(current.tokens)]) == current.tokens
                                       for p in prompts):
            return current
        common = common_prefix(prompts)
        return self.sampler.prefill_prefix(params, common) if len(common) >= MIN_SHARED_PREFIX_TOKENS else None

    # ------------------------------------------------------------------ trajectory layout

    def _trajectory_turn(self, params, session, row_of, episodes, live, observations, guide, k, seed):
        budget = self.config.max_response_tokens
        if k == 0:
            prompts = [self.prompts.first_prompt(episodes[i], guide[i]) for i in live]
            # Reserve room for a typical episode so the cache rarely regrows (it still can, correctly).
            reserve = min(self.config.max_context_tokens, self.max_turns * (budget + 64))
            session, comps = self.sampler.begin(params, prompts, max_new_tokens=budget, sampling=self.sampling,
                                                seed=seed * 100_003, reserve_slots=reserve,
                                                prefix=self._shared_prefix(params, prompts, None))
            return session, comps, dict(zip(live, prompts)), {i: r for r, i in enumerate(live)}
        if len(live) < self.config.compact_below * session.num_rows:
            keep = [row_of[i] for i in live]
            session = self.sampler.compact(session, keep)
            row_of = {i: r for r, i in enumerate(live)}
        chunks: list[list[int] | None] = [None] * session.num_rows
        chunk_of = {}
        for i in live:
            last = episodes[i].turns[-1]
            closed = bool(last.response_ids) and last.response_ids[-1] in self._turn_end_ids
            chunk = self.prompts.observation_chunk(observations[i], close_previous=not closed)
            chunks[row_of[i]] = chunk
            chunk_of[i] = chunk
        session, comps_all = self.sampler.extend(params, session, chunks, max_new_tokens=budget,
                                                 sampling=self.sampling, seed=seed * 100_003 + k)
        return session, [comps_all[row_of[i]] for i in live], chunk_of, row_of


def common_prefix(prompts: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix of all `prompts` that leaves each at least one token of its own."""
    if not prompts:
        return []
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for p in prompts[1:]:
        n = next((j for j in range(n) if p[j] != first[j]), n)
    return list(first[:max(n, 0)])


__all__ = ["LAYOUTS", "RolloutConfig", "RolloutEngine", "RolloutStats", "TURN_END", "common_prefix"]

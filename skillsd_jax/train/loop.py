"""The training loop: the `Trainer` owns the host-side parts of a run and repeats one iteration.

Host-side orchestration only: the math lives in the pure jitted step (`step.py`) and each of the six
steps of an iteration is a function in `iteration.py` (rollout -> credit -> batch -> update -> sync ->
summarize); `Trainer.train_iteration` calls them in that order. See docs/algorithm.md.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from skillsd_jax import sharding as shd
from skillsd_jax.agent import RolloutEngine
from skillsd_jax.models.tokenizer import load_tokenizer
from skillsd_jax.sampling import Sampler
from skillsd_jax.train import builders, iteration as steps
from skillsd_jax.train.batch import TrainBatch
from skillsd_jax.train.checkpoint import Checkpointer
from skillsd_jax.train.config_utils import dataclass_from, require
from skillsd_jax.train.evaluate import blind_reference, evaluate_policy
from skillsd_jax.train.guidance import Guide
from skillsd_jax.train.methods import get_method
from skillsd_jax.train.metrics import MetricsWriter, format_line, plot_metrics
from skillsd_jax.train.optimizer import OptimizerConfig, make_optimizer
from skillsd_jax.train.returns import AdvantageConfig
from skillsd_jax.train.rollout_correction import RolloutCorrectionConfig
from skillsd_jax.train.state import TeacherSyncConfig, init_state, sync_teacher, teacher_params
from skillsd_jax.train.step import StepConfig, make_score_fn, make_train_step
from skillsd_jax.train.tasks import TaskIterator, task_seeds

log = logging.getLogger(__name__)
CONSOLE_KEYS = ("train/return_mean", "train/success_rate", "train/valid_action_rate", "loss/grpo_loss",
                "loss/sdl_loss", "teacher/skill_logp_gain", "rows/sdl_rows", "skills/bank_size", "skills/failed",
                "skills/dropped", "eval/success_rate", "time/iteration_s")
NO_TEACHER_WARN_AFTER = 3  # iterations in a row without teacher rows before a method with SDL warns


class Trainer:
    """Owns the host-side parts of a run; `run()` trains, evaluates, checkpoints and resumes."""

    def __init__(self, config: Any, *, workdir: str | None = None):
        self.config = config
        self.workdir = os.path.abspath(workdir or config.workdir)
        self.method = get_method(config.method)
        self._check_config()
        os.makedirs(self.workdir, exist_ok=True)
        c = config
        devices = jax.devices()
        self.mesh = shd.make_mesh(**c.mesh.to_dict()) if len(devices) > 1 else None
        self.tokenizer = load_tokenizer(c.tokenizer or None)
        model = builders.build_model(c.model, len(self.tokenizer), self.mesh, c.seed)
        self.model_config = model.config
        self.graphdef, model_state = nnx.split(model)
        params = nnx.to_pure_dict(model_state)
        del model, model_state

        loss = builders.loss_config(c, self.tokenizer,
                                    grpo_coef=c.loss.grpo_coef if self.method.grpo else 0.0,
                                    sdl_coef=c.loss.sdl_coef if self.method.sdl else 0.0,
                                    temperature=float(c.rollout.temperature))
        # Whether the teacher term is on is decided here, once: it drives the teacher prompts, the
        # teacher scoring and the batch's SDL mask.
        self.sdl_on = self.method.sdl and loss.sdl_coef > 0
        opt = dataclass_from(c.optimizer, OptimizerConfig, "optimizer")
        self.step_config = StepConfig(loss=loss, optimizer=opt, micro_batches=c.micro_batches)
        sync_mode = self.method.teacher_sync or c.teacher_sync.mode
        self.sync_config = dataclass_from(c.teacher_sync, TeacherSyncConfig, "teacher_sync", mode=sync_mode)
        self.tx = make_optimizer(opt)
        self._init_state = jax.jit(functools.partial(init_state, tx=self.tx, sync=self.sync_config, seed=c.seed))
        self.state = self._init_state(params)
        # Held while the state is replaced (its buffers are donated to the step), so a background
        # policy summarizer never reads parameters that were just donated.
        self.state_lock = threading.Lock()
        self.state_shardings = jax.tree.map(lambda x: x.sharding, self.state)
        self._train_step = None  # built on the first batch (its pytree structure fixes the shardings)
        self.score = make_score_fn(self.graphdef, chunk=loss.logprob_chunk, temperature=loss.temperature,
                                   mesh=self.mesh)
        self.sync = jax.jit(functools.partial(sync_teacher, sync=self.sync_config), donate_argnums=0)
        self.reference_params = jax.tree.map(jnp.copy, params) if loss.kl_coef > 0 else None

        self.sampler = Sampler(self.graphdef, self.model_config, mesh=self.mesh,
                               cache_dtype=builders.DTYPES[c.model.dtype], decode_kernel=c.cpu_decode_kernel)
        g = c.rollout
        self.group_size, self.tasks_per_iter = g.group_size, g.tasks_per_iteration
        self.prompts, self.env_max_turns = builders.prompt_builder(c, self.tokenizer)
        self.rollout_config = builders.rollout_config(c)
        self.train_pool = builders.env_pool(c.env, "train", self.tasks_per_iter * self.group_size)
        self.rollout = RolloutEngine(self.sampler, self.tokenizer, self.train_pool, self.prompts, c.env.name,
                                     self.env_max_turns, self.rollout_config)
        self.eval_rollout = None
        if c.eval.every > 0 or c.eval.at_end:
            self.eval_rollout = builders.eval_rollout(c, self.sampler, self.tokenizer, self.prompts,
                                                      self.env_max_turns, self.rollout_config)
        # A sampled evaluation can also report the greedy policy (`eval_greedy/*`), on the same environments.
        self.greedy_eval_rollout = None
        self._blind: dict[str, float] | None = None  # eval/blind_* (blind_reference), once played
        if self.eval_rollout is not None and c.eval.temperature > 0 and c.eval.greedy_too:
            self.greedy_eval_rollout = RolloutEngine(self.sampler, self.tokenizer, self.eval_rollout.pool, self.prompts,
                                                     c.env.name, self.env_max_turns,
                                                     dataclasses.replace(self.eval_rollout.config, temperature=0.0))
        # Acting with the selected skill vs without, on training tasks that have one (the evaluation's decoding).
        self.skill_eval_rollout = RolloutEngine(self.sampler, self.tokenizer, self.train_pool, self.prompts,
                                                c.env.name, self.env_max_turns,
                                                builders.eval_rollout_config(c, self.rollout_config))
        self.batch_spec = steps.BatchSpec(
            layout=c.rows.layout, sdl_on=self.sdl_on, full_vocab_teacher=loss.sdl_kind != "sampled",
            recompute_old_logp=c.recompute_old_logp, row_multiple=c.micro_batches * self._data_parallel() * c.ppo.minibatches,
            length_quantum=c.rows.length_quantum, max_length=c.rows.max_length or None,
            advantage=dataclass_from(c.advantage, AdvantageConfig, "advantage"),
            correction=dataclass_from(c.rollout_correction, RolloutCorrectionConfig, "rollout_correction"))

        self.bank = self.tracker = self.summarizer = None
        self.bank_path = os.path.join(self.workdir, "skills.sqlite")
        if self.method.uses_skills:
            self._open_skills()
        self.train_seeds, self.eval_seeds = task_seeds(c)
        self.tasks = TaskIterator(self.train_seeds, seed=c.seed)
        self.checkpointer = Checkpointer(os.path.join(self.workdir, "checkpoints"), max_to_keep=c.checkpoint.keep)
        self.metrics = MetricsWriter.from_config(self.workdir, c.metrics, enabled=jax.process_index() == 0,
                                                 run_config=c.to_dict())
        self.iteration = 0
        self.env_steps = 0  # environment steps taken by training rollouts so far (the budget's unit)
        self.guide = Guide()
        self.task_seeds: dict[str, int] = {}  # task id -> seed, for acting on tasks that have skills
        self._no_teacher_rows = 0

    # ------------------------------------------------------------------ setup helpers

    def _check_config(self) -> None:
        c = self.config
        require(c.rollout.group_size >= 1, "config.rollout.group_size must be >= 1")
        require(c.rollout.tasks_per_iteration >= 1, "config.rollout.tasks_per_iteration must be >= 1")
        require(c.num_iterations >= 0, "config.num_iterations must be >= 0")
        require(c.eval.blind_repeats >= 0, "config.eval.blind_repeats must be >= 0")
        require(c.micro_batches >= 1, "config.micro_batches must be >= 1")
        require(c.ppo.minibatches >= 1 and c.ppo.epochs >= 1,
                "config.ppo.minibatches and config.ppo.epochs must be >= 1")
        require(c.rows.layout in ("per_step", "trajectory"), "config.rows.layout must be 'per_step' or 'trajectory'")
        require(c.rows.layout == c.rollout.layout or c.rows.layout == "per_step",
                "config.rows.layout='trajectory' needs config.rollout.layout='trajectory' (one growing sequence)")
        require(c.skills.backend in ("rule", "oracle", "openai", "policy"),
                "config.skills.backend must be rule|oracle|openai|policy")
        require(c.skills.granularity in ("group", "episode"), "config.skills.granularity must be group|episode")
        # The trainer scores tokens at the sampling temperature but does not reproduce top-k / top-p
        # truncation, so ratios against filtered sampling distributions would be biased.
        require(c.rollout.top_k == 0 and c.rollout.top_p >= 1.0,
                "config.rollout.top_k / top_p: training rollouts must sample the full tempered distribution "
                "(top_k=0, top_p=1.0); the trainer's log-probs do not apply those filters")
        require(c.rollout.temperature > 0, "config.rollout.temperature must be > 0 for training rollouts")
        require(c.rollout_correction.mode == "none" or c.recompute_old_logp,
                "config.rollout_correction needs config.recompute_old_logp=True (it weighs trainer vs sampler)")
        if self.method.sdl and c.loss.sdl_kind != "sampled":
            log.warning("sdl_kind=%s materializes [B,T,V] student and teacher logits", c.loss.sdl_kind)

    def _open_skills(self) -> None:
        from skillsd_jax.skills import AsyncSummarizer, CreditTracker, SkillBank

        s = self.config.skills
        self.bank = SkillBank(self.bank_path, capacity_per_task=s.capacity_per_task, ucb_c=s.ucb_c)
        self.tracker = CreditTracker(self.bank, mode=s.credit)
        summarizer = builders.make_summarizer(s, sampler=self.sampler, params_fn=lambda: self.state.params,
                                              tokenizer=self.tokenizer, lock=self.state_lock)
        self.summarizer = AsyncSummarizer(summarizer, self.bank, max_workers=s.workers, max_queue=s.max_queue)

    def _close_skills(self) -> None:
        if self.summarizer is not None:
            self.summarizer.close(timeout=30.0)
        if self.bank is not None:
            self.bank.close()
        self.bank = self.tracker = self.summarizer = None

    def _step_fn(self, batch: TrainBatch):
        if self._train_step is None:
            batch_sh = (jax.tree.map(lambda x: shd.batch_sharding(self.mesh, np.ndim(x)), batch)
                        if self.mesh is not None else None)
            self._batch_shardings = batch_sh
            self._train_step = make_train_step(self.graphdef, self.tx, self.step_config,
                                               state_shardings=self.state_shardings if self.mesh else None,
                                               batch_shardings=batch_sh)
        return self._train_step

    def start_from(self, params: Any) -> None:
        """Starts RL from given parameters (e.g. a cold start shared by several runs) instead of a warm-up."""
        with self.state_lock:
            self.state = self._init_state(jax.tree.map(jnp.asarray, params))

    def _data_parallel(self) -> int:
        return 1 if self.mesh is None else self.mesh.shape["data"] * self.mesh.shape["fsdp"]

    def _render_skill(self, skill) -> str:
        from skillsd_jax.skills import render_skill_block

        return render_skill_block(skill, tokenizer=self.tokenizer, max_tokens=self.config.prompt.max_guidance_tokens)

    # ------------------------------------------------------------------ one iteration

    def train_iteration(self) -> dict[str, Any]:
        """rollout -> credit -> batch -> update -> sync -> summarize (each step in `iteration.py`)."""
        c, m = self.config, self.method
        t_start = time.perf_counter()
        self.iteration += 1
        it = self.iteration
        self.guide = Guide(bank=self.bank, tracker=self.tracker, iteration=it, render=self._render_skill)
        act_params = teacher_params(self.state) if m.act_with_teacher else self.state.params

        episodes, metrics = steps.rollout(self.rollout, act_params, self.tasks.next(self.tasks_per_iter),
                                          self.group_size, seed=c.seed * 1_000_003 + it, prefix=f"it{it}",
                                          guidance=self.guide.bind(m.act_guidance))
        self.task_seeds.update({ep.task_id: ep.seed for ep in episodes})
        self.env_steps += sum(ep.num_turns for ep in episodes)
        metrics["progress/env_steps"] = float(self.env_steps)
        groups = steps.credit(self.tracker, episodes, it)

        t0 = time.perf_counter()
        scoring = steps.Scoring(self.score, self.state.params, teacher_params(self.state), self.reference_params)
        batch, batch_metrics = steps.make_batch(episodes, m, self.prompts, self.guide, scoring, self.batch_spec)
        metrics.update(batch_metrics)
        metrics["time/scoring_s"] = time.perf_counter() - t0
        self._watch_teacher_rows(batch_metrics["rows/sdl_rows"])

        t0 = time.perf_counter()
        u = c.ppo
        part = batch if u.minibatches == 1 else jax.tree.map(lambda x: x[: len(x) // u.minibatches], batch)
        step = self._step_fn(part)
        put = (lambda b: jax.device_put(b, self._batch_shardings)) if self.mesh is not None else None
        with self.state_lock:
            self.state, step_metrics = steps.update(step, self.state, batch, minibatches=u.minibatches,
                                                    epochs=u.epochs, put=put,
                                                    rng=np.random.default_rng([c.seed, it, 7]))
            self.state = self.sync(self.state, it)

        if self.summarizer is not None:  # host work that overlaps with the dispatched update
            metrics.update(steps.summarize(self.summarizer, self.bank, groups, it,
                                           per_episode=c.skills.granularity == "episode",
                                           max_untried=c.skills.max_untried_per_task))
            metrics["skills/tasks_with_skill"] = (float(np.mean([self.guide.chosen.get(t) is not None for t in groups]))
                                                  if groups else 0.0)
        step_metrics = jax.device_get(step_metrics)
        metrics["time/train_step_s"] = time.perf_counter() - t0
        metrics.update({f"loss/{k}": float(v) for k, v in step_metrics.items()})
        metrics["time/iteration_s"] = time.perf_counter() - t_start
        metrics["sampler/programs"] = float(self.sampler.num_compilations)
        return metrics

    def _watch_teacher_rows(self, sdl_rows: float) -> None:
        """Warns when a method with a teacher term trained several iterations in a row without one."""
        if not self.sdl_on:
            return
        self._no_teacher_rows = self._no_teacher_rows + 1 if sdl_rows == 0 else 0
        if self._no_teacher_rows == NO_TEACHER_WARN_AFTER or (self._no_teacher_rows and self._no_teacher_rows % 10 == 0):
            log.warning("method %s has had no teacher rows for %d iterations in a row (empty skill buffers? "
                        "summarizer failures: see skills/failed, skills/dropped): SDL is contributing nothing",
                        self.method.name, self._no_teacher_rows)

    def evaluate(self) -> dict[str, Any]:
        """Held-out success (one episode per test task at `eval.temperature`, and the greedy policy's too
        with `eval.greedy_too`) with its 95% Wilson interval, and, for
        methods with skills, the policy on training tasks with a skill: acting plain vs with the skill."""
        out = evaluate_policy(self.eval_rollout, self.state.params, self.eval_seeds)
        if self.greedy_eval_rollout is not None:
            out.update(evaluate_policy(self.greedy_eval_rollout, self.state.params, self.eval_seeds,
                                       prefix="eval_greedy"))
        if self.bank is not None:
            out.update(self._evaluate_with_skills())
        if self._blind is None:  # the same tasks every time: played once a run
            self._blind = blind_reference(builders.env_factory(self.config.env, "eval"), self.eval_seeds,
                                          self.config.eval.blind_repeats, self.config.rollout.max_turns)
        out.update(self._blind)
        return out

    def _evaluate_with_skills(self) -> dict[str, float]:
        guide = Guide(bank=self.bank, iteration=self.iteration, render=self._render_skill)  # no credit recorded
        seeds = [self.task_seeds[t] for t in self.bank.tasks() if t in self.task_seeds][: self.train_pool.num_envs]
        if not seeds:
            return {}
        out: dict[str, float] = {"eval_skill/tasks": float(len(seeds))}
        for name, guidance in (("plain", None), ("with_skill", guide.bind("skill"))):
            episodes, _ = self.skill_eval_rollout.run(self.state.params, seeds, 1, seed=54321,
                                                      episode_prefix=f"eval_skill_{name}", guidance=guidance)
            out[f"eval_skill/{name}_success_rate"] = float(np.mean([e.won for e in episodes if e.error is None] or [0]))
        return out

    def warm_start(self) -> None:
        """Supervised warm-up on demonstrations; the RL run (and a frozen teacher) starts from its result.

        With `warmstart.skill_*` fractions > 0, part of the demonstrations carry skill blocks written by
        the run's faithful rule summarizer (train/skill_demos.py), so the teacher can read skills."""
        from skillsd_jax.train.sft import SFTConfig, warm_start

        w = self.config.warmstart
        cfg = dataclass_from({k: v for k, v in w.to_dict().items() if not k.startswith("skill_")}, SFTConfig,
                             "warmstart")
        params, history = warm_start(self.state.params, self.graphdef, builders.env_factory(self.config.env, "train"),
                                     self.prompts, self.tokenizer, self.config.rows.layout, cfg, seed=self.config.seed,
                                     length_quantum=self.config.rows.length_quantum,
                                     progress=self.config.progress_bar, guidance_fn=self._demo_guidance_fn())
        with self.state_lock:
            self.state = self._init_state(params)
        for h in history:
            self.metrics.write(0, h)

    def _demo_guidance_fn(self):
        w = self.config.warmstart
        if w.skill_match + w.skill_advice + w.skill_other <= 0:
            return None
        from skillsd_jax.skills import RuleSummarizer
        from skillsd_jax.train.skill_demos import SkillDemoMix, demo_guidance

        mix = SkillDemoMix(match=w.skill_match, advice=w.skill_advice, other=w.skill_other)
        summarizer = RuleSummarizer()

        def summarize(group):
            skills = summarizer.summarize(group, step=0)
            return skills[0] if skills else None

        def fn(demos, env):
            blocks, counts = demo_guidance(demos, env, summarize, self._render_skill, mix, w.answer_template,
                                           seed=self.config.seed)
            log.info("warm-up demonstrations with skill blocks: %s", counts)
            return blocks

        return fn

    # ------------------------------------------------------------------ checkpoints

    def save(self) -> None:
        extras = {"iteration": self.iteration, "env_steps": self.env_steps, "tasks": self.tasks.state_dict(),
                  "method": self.config.method,
                  "credit": self.tracker.state_dict() if self.tracker is not None else None}
        if self.summarizer is not None:
            self.summarizer.drain(timeout=self.config.skills.drain_timeout_s)
        self.checkpointer.save(self.iteration, self.state, extras, bank=self.bank)

    def restore(self, iteration: int | None = None) -> bool:
        """Resumes from the latest (or given) checkpoint; returns False when there is none."""
        iteration = self.checkpointer.latest() if iteration is None else iteration
        if iteration is None:
            return False
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), self.state)
        state, extras = self.checkpointer.restore(iteration, abstract)
        if extras.get("method") != self.config.method:
            raise ValueError(f"checkpoint {iteration} was trained with method={extras.get('method')!r}, "
                             f"config says {self.config.method!r}")
        self.state = state
        self.iteration = int(extras["iteration"])
        self.env_steps = int(extras.get("env_steps", 0))
        self.tasks.load_state_dict(extras["tasks"])
        if self.method.uses_skills:
            self._close_skills()
            self.checkpointer.restore_bank_file(iteration, self.bank_path)
            self._open_skills()
            if extras.get("credit") is not None:
                self.tracker.load_state_dict(extras["credit"])
        self.metrics.truncate_after(self.iteration)
        log.info("resumed from checkpoint %d", iteration)
        return True

    # ------------------------------------------------------------------ the run

    def run(self, num_iterations: int | None = None) -> dict[str, Any]:
        c = self.config
        total = c.num_iterations if num_iterations is None else num_iterations
        if c.checkpoint.resume:
            self.restore()
        if self.iteration == 0 and c.warmstart.steps > 0:
            self.warm_start()
        if self.iteration == 0 and c.eval.at_start and self.eval_rollout is not None and total > 0:  # curves' start
            self.metrics.write(0, self.evaluate())
        last: dict[str, Any] = {}
        from tqdm import tqdm

        bar = tqdm(total=total, initial=min(self.iteration, total), desc=f"{c.method} on {c.env.name}",
                   disable=not c.progress_bar or jax.process_index() != 0)
        try:
            budget = c.budget_env_steps
            while self.iteration < total and not (budget > 0 and self.env_steps >= budget):
                metrics = self.train_iteration()
                if c.eval.every > 0 and self.iteration % c.eval.every == 0:
                    metrics.update(self.evaluate())
                if c.checkpoint.every > 0 and self.iteration % c.checkpoint.every == 0:
                    self.save()
                self.metrics.write(self.iteration, metrics)
                if self.iteration % c.log_every == 0:
                    bar.write(format_line(self.iteration, metrics, CONSOLE_KEYS))
                bar.update(1)
                last = metrics
            if c.eval.at_end and self.eval_rollout is not None and "eval/success_rate" not in last:
                final = self.evaluate()
                self.metrics.write(self.iteration, {**final, "progress/env_steps": float(self.env_steps)})
                bar.write(format_line(self.iteration, final, ("eval/success_rate", "eval/return_mean")))
                last.update(final)
            if c.checkpoint.every > 0 and self.iteration not in self.checkpointer.steps() and total > 0:
                self.save()
            last.update({k.replace("eval", "eval_start", 1): v for k, v in self._start_eval().items()})
        finally:
            bar.close()
            self.checkpointer.wait()
        if self.metrics.enabled and os.path.exists(self.metrics.path):
            png = plot_metrics(self.metrics.path, os.path.join(self.workdir, "curves.png"))
            if png:
                log.info("learning curves: %s", png)
        return last

    def _start_eval(self) -> dict[str, Any]:
        """The evaluation written at iteration 0 (before RL), read back so a resumed run reports it too."""
        if not (self.metrics.enabled and os.path.exists(self.metrics.path)):
            return {}
        import json

        found: dict[str, Any] = {}
        with open(self.metrics.path) as f:
            for line in f:
                row = json.loads(line)
                if row.get("iteration") == 0 and "eval/success_rate" in row:
                    found = {k: v for k, v in row.items() if k.startswith(("eval/", "eval_greedy/"))}
        return found

    def close(self) -> None:
        self._close_skills()
        self.checkpointer.close()
        self.metrics.close()
        self.train_pool.close()
        if self.eval_rollout is not None:
            self.eval_rollout.pool.close()


def train(config: Any, workdir: str | None = None) -> dict[str, Any]:
    """Builds a Trainer from `config`, runs it to `config.num_iterations`, returns the last metrics."""
    trainer = Trainer(config, workdir=workdir)
    try:
        return trainer.run()
    finally:
        trainer.close()

"""The pure train step `train_step(state, batch) -> (state, metrics)` and the scoring forward.

`L = grpo_coef * L_GRPO + sdl_coef * L_SDL (+ kl_coef * L_KL - entropy_coef * H - choice_entropy_coef * H_C)`,
`H_C` being the entropy of the policy restricted to a few choice tokens (the moves) where a choice is
named. The batch is split into micro-batches whose gradients are summed, each micro-batch's loss
sums divided by the GLOBAL denominators (computed from the masks up front), so accumulation
reproduces the full batch exactly.
A non-finite loss or gradient leaves parameters and optimizer state untouched and counts a skip.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from skillsd_jax import losses
from skillsd_jax.models.logprobs import chunked_logprobs
from skillsd_jax.sharding import batch_sharding
from skillsd_jax.train.batch import TrainBatch
from skillsd_jax.train.optimizer import OptimizerConfig, learning_rate_schedule
from skillsd_jax.train.state import TrainState, teacher_params

Array = jax.Array
SDL_KINDS = ("sampled", "full_vocab", "topk")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    grpo_coef: float = 1.0  # 0 for pure distillation (OPD)
    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip: float | None = None
    sdl_coef: float = 1e-3  # lambda; 0 disables the teacher signal (GRPO baseline)
    sdl_kind: str = "sampled"  # "sampled" (IS reverse KL on sampled tokens) | "full_vocab" | "topk"
    sdl_topk: int = 32
    is_clip: float | None = None
    kl_coef: float = 0.0  # KL to a reference policy (batch.ref_logp)
    kl_kind: str = "k3"
    entropy_coef: float = 0.0
    # Entropy over the choice tokens only (their softmax renormalized), at the position after
    # `choice_after_token`: keeps the moves diverse without moving mass off them (docs/algorithm.md).
    choice_entropy_coef: float = 0.0
    choice_after_token: int = -1
    choice_tokens: tuple[int, ...] = ()
    agg: str = "token-mean"
    norm_length: int | None = None  # seq-mean-token-sum-norm constant (default: row length T)
    logprob_chunk: int = 0  # sequence chunk of the log-softmax; 0: automatic
    temperature: float = 1.0  # the sampler's temperature: every log-prob is scored under it

    def __post_init__(self) -> None:
        losses.aggregation.check_mode(self.agg)
        if self.sdl_kind not in SDL_KINDS:
            raise ValueError(f"loss.sdl_kind must be one of {SDL_KINDS}, got {self.sdl_kind!r}")
        if self.kl_kind not in losses.KL_KINDS:
            raise ValueError(f"loss.kl_kind must be one of {losses.KL_KINDS}, got {self.kl_kind!r}")
        for name in ("grpo_coef", "sdl_coef", "kl_coef", "entropy_coef", "choice_entropy_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        if self.choice_entropy_coef > 0:
            if self.choice_after_token < 0 or len(set(self.choice_tokens)) < 2:
                raise ValueError("loss.choice_entropy_coef > 0 needs the token that opens a choice and at least two "
                                 f"distinct choice tokens, got {self.choice_after_token} and {self.choice_tokens}")
        if self.eps_low < 0 or self.eps_high < 0:
            raise ValueError("loss.eps_low and loss.eps_high must be >= 0")
        if not self.temperature > 0:
            raise ValueError(f"loss.temperature (the rollout temperature) must be > 0, got {self.temperature}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ValueError(f"loss.dual_clip must be > 1, got {self.dual_clip}")


@dataclasses.dataclass(frozen=True)
class StepConfig:
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    micro_batches: int = 1


# ---------------------------------------------------------------------------- forward helpers


def aligned_logprobs(model, ids: Array, attention_mask: Array, chunk: int, with_entropy: bool,
                     temperature: float = 1.0, choice_tokens: tuple[int, ...] = ()):
    """Token-aligned log-probs: `[:, t]` = log p(ids[t] | ids[<t]) at `temperature`; position 0 gets 0.

    Returns `(logp, entropy or None, choice logits or None)`; with `choice_tokens`, the third is the
    `[B,T,C]` tempered logits of just those tokens, aligned the same way.
    """
    h = model.hidden_states(ids, attention_mask=attention_mask)
    targets = jnp.concatenate([ids[:, 1:], jnp.zeros_like(ids[:, :1])], axis=1)
    w = model.unembedding()
    logp, ent = chunked_logprobs(h, w, targets, chunk_size=chunk, with_entropy=with_entropy,
                                 compute_dtype=model.dtype, temperature=temperature)
    shift = lambda x: jnp.concatenate([jnp.zeros_like(x[:, :1]), x[:, :-1]], axis=1)
    choice = None
    if choice_tokens:
        w_c = w[:, jnp.asarray(choice_tokens, jnp.int32)].astype(model.dtype)
        choice = shift(jnp.einsum("btd,dc->btc", h.astype(model.dtype), w_c,
                                  preferred_element_type=jnp.float32) / temperature)
    return shift(logp), (shift(ent) if with_entropy else None), choice


def score(graphdef: Any, params: Any, input_ids: Array, attention_mask: Array, *, chunk: int = 0,
          temperature: float = 1.0) -> Array:
    """Forward-only token-aligned log-probs `[B,T]`: old, teacher (on teacher rows) and reference scores."""
    model = nnx.merge(graphdef, params)
    return aligned_logprobs(model, input_ids, attention_mask, chunk, with_entropy=False, temperature=temperature)[0]


def make_score_fn(graphdef: Any, *, chunk: int = 0, temperature: float = 1.0, in_shardings=None,
                  out_shardings=None, mesh: Any = None):
    """`jax.jit`ted `score(params, input_ids, attention_mask)` bound to a model graphdef and the
    sampling temperature (log-probs are those of the distribution the sampler drew from).

    With a `mesh`, the rows are first placed over its batch axes (their count must divide): rows
    given as host arrays would otherwise be replicated, and every device would score every row.
    """
    fn = functools.partial(score, graphdef, chunk=chunk, temperature=temperature)
    kw = {}
    if in_shardings is not None:
        kw.update(in_shardings=in_shardings, out_shardings=out_shardings)
    scorer = jax.jit(fn, **kw)
    if mesh is None:
        return scorer
    put = lambda x: jax.device_put(x, batch_sharding(mesh, jnp.ndim(x)))
    return lambda params, input_ids, attention_mask: scorer(params, put(input_ids), put(attention_mask))


def _aligned_logits(model, ids: Array, attention_mask: Array, temperature: float = 1.0) -> Array:
    """Logits predicting each token from its prefix, token-aligned `[B,T,V]` (position 0 gets zeros)."""
    logits = model(ids, attention_mask=attention_mask)
    if temperature != 1.0:
        logits = logits / temperature
    return jnp.concatenate([jnp.zeros_like(logits[:, :1]), logits[:, :-1]], axis=1)


# ---------------------------------------------------------------------------- loss


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TermRecord:
    """One loss term of one micro-batch.

    `value` is already divided by the term's global denominator, so micro-batches add up to the
    full-batch loss; `tokens` counts the tokens it covered and `token_sums` holds sums over those
    tokens of per-token diagnostics (divided by the term's total `tokens` when the step ends).
    """

    value: Array
    tokens: Array
    token_sums: dict[str, Array]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class LossRecords:
    """What `_micro_loss` reports: the total and one record per active term, by name."""

    total: Array
    terms: dict[str, TermRecord]
    ratio_min: Array  # PPO ratio extremes over the policy tokens (combined by min / max, not sums)
    ratio_max: Array


def _denominators(batch: TrainBatch, cfg: LossConfig) -> dict[str, Array]:
    """Global aggregation counts of each loss term (they depend only on masks)."""
    norm = cfg.norm_length or batch.input_ids.shape[-1]
    zeros = jnp.zeros(batch.loss_mask.shape, jnp.float32)
    sdl_mask = batch.loss_mask * batch.sdl_mask[..., None]
    out = {"policy": losses.aggregate(zeros, batch.loss_mask, cfg.agg, norm_length=norm)[1],
           "sdl": losses.aggregate(zeros, sdl_mask, cfg.agg, norm_length=norm)[1]}
    if cfg.choice_entropy_coef > 0:
        out["choice"] = jnp.sum(losses.choice_positions(batch.input_ids, batch.loss_mask, cfg.choice_after_token))
    return out


def _micro_loss(params: Any, graphdef: Any, teacher: Any, mb: TrainBatch, denom: dict[str, Array],
                cfg: LossConfig, norm: int) -> tuple[Array, LossRecords]:
    """Loss of one micro-batch, normalized by the global denominators, with its per-term records."""
    model = nnx.merge(graphdef, params)
    with_entropy = cfg.entropy_coef > 0
    with_choice = cfg.choice_entropy_coef > 0
    logp, ent, choice_logits = aligned_logprobs(model, mb.input_ids, mb.attention_mask, cfg.logprob_chunk,
                                                with_entropy, cfg.temperature,
                                                cfg.choice_tokens if with_choice else ())
    mask = mb.loss_mask
    safe = lambda s, c: s / jnp.maximum(c, losses.TINY)
    terms: dict[str, TermRecord] = {}

    _, pg = losses.ppo_clip_loss(logp, mb.old_logp, mb.advantages, mask, eps_low=cfg.eps_low, eps_high=cfg.eps_high,
                            dual_clip=cfg.dual_clip, agg=cfg.agg, norm_length=norm,
                            token_weights_BxT=mb.rollout_weights)
    tokens = pg["tokens"]
    per_token = {k: pg[k] * tokens for k in ("clip_frac", "clip_frac_low", "clip_frac_high", "dual_clip_frac",
                                               "ratio_mean", "ppo_kl")}
    # Sampler-vs-trainer mismatch: mean |logp - old_logp| on trained tokens (0 if old was recomputed).
    per_token["sampler_gap"] = jnp.sum(jnp.abs(jax.lax.stop_gradient(logp) - mb.old_logp) * mask)
    terms["grpo"] = TermRecord(safe(pg["sum"], denom["policy"]), tokens, per_token)
    # Empty micro-batches must not pull the min/max toward their placeholder 0.
    ratio_min = jnp.where(tokens > 0, pg["ratio_min"], jnp.inf)
    ratio_max = jnp.where(tokens > 0, pg["ratio_max"], -jnp.inf)

    sdl_mask = mask * mb.sdl_mask[..., None]
    if cfg.sdl_kind == "sampled":
        _, sd = losses.sdl_loss(logp, mb.old_logp, mb.teacher_logp, sdl_mask, is_clip=cfg.is_clip, agg=cfg.agg,
                           norm_length=norm)
        sdl_sums = {"is_clip_frac": sd["is_clip_frac"] * sd["tokens"]}
    else:
        student_logits = _aligned_logits(model, mb.input_ids, mb.attention_mask, cfg.temperature)
        t_model = nnx.merge(graphdef, teacher)
        t_logits = jax.lax.stop_gradient(_aligned_logits(t_model, mb.teacher_ids, mb.teacher_attention_mask,
                                                         cfg.temperature))
        t_logits = jnp.take_along_axis(t_logits, mb.teacher_index[..., None].astype(jnp.int32), axis=1)
        if cfg.sdl_kind == "full_vocab":
            _, sd = losses.full_vocab_reverse_kl(student_logits, t_logits, sdl_mask, agg=cfg.agg, norm_length=norm)
        else:
            _, sd = losses.topk_reverse_kl(student_logits, t_logits, sdl_mask, k=cfg.sdl_topk, agg=cfg.agg,
                                      norm_length=norm)
        sdl_sums = {}
    # Student-teacher log-prob gap on SDL tokens (sampled-token log-probs, whatever the SDL kind).
    sdl_sums["sdl_gap"] = jnp.sum((jax.lax.stop_gradient(logp) - mb.teacher_logp) * sdl_mask)
    terms["sdl"] = TermRecord(safe(sd["sum"], denom["sdl"]), sd["tokens"], sdl_sums)

    if cfg.kl_coef > 0:
        _, kl = losses.kl_penalty_loss(logp, mb.ref_logp, mask, kind=cfg.kl_kind, agg=cfg.agg, norm_length=norm)
        terms["kl"] = TermRecord(safe(kl["sum"], denom["policy"]), tokens, {})
    if with_entropy:
        _, en = losses.entropy_loss(ent, mask, agg=cfg.agg, norm_length=norm)
        terms["entropy"] = TermRecord(safe(en["sum"], denom["policy"]), tokens, {})
    if with_choice:
        where = losses.choice_positions(mb.input_ids, mask, cfg.choice_after_token)
        _, ce = losses.choice_entropy_loss(choice_logits, where)
        terms["choice_entropy"] = TermRecord(safe(ce["sum"], denom["choice"]), ce["count"], {})

    coefs = {"grpo": cfg.grpo_coef, "sdl": cfg.sdl_coef, "kl": cfg.kl_coef, "entropy": -cfg.entropy_coef,
             "choice_entropy": -cfg.choice_entropy_coef}
    total = sum(coefs[name] * rec.value for name, rec in terms.items())
    return total, LossRecords(total, terms, ratio_min, ratio_max)


def _combine(acc: LossRecords, new: LossRecords) -> LossRecords:
    """Sum of two micro-batches' records (extremes combine by min / max)."""
    summed = jax.tree.map(jnp.add, (acc.total, acc.terms), (new.total, new.terms))
    return LossRecords(summed[0], summed[1], jnp.minimum(acc.ratio_min, new.ratio_min),
                       jnp.maximum(acc.ratio_max, new.ratio_max))


def train_step(state: TrainState, batch: TrainBatch, *, graphdef: Any, tx: optax.GradientTransformation,
               config: StepConfig) -> tuple[TrainState, dict[str, Array]]:
    """One optimizer update on `batch` (pure; jit with `make_train_step`)."""
    cfg = config.loss
    norm = cfg.norm_length or batch.input_ids.shape[-1]
    denom = _denominators(batch, cfg)
    teacher = jax.lax.stop_gradient(teacher_params(state))
    grad_fn = jax.value_and_grad(_micro_loss, has_aux=True)

    def one(mb):
        (_, records), grads = grad_fn(state.params, graphdef, teacher, mb, denom, cfg, norm)
        return grads, records

    m = config.micro_batches
    if m == 1:
        grads, records = one(batch)
    else:
        parts = batch.split(m)
        first = jax.tree.map(lambda x: x[0], parts)
        grads, records = one(first)

        def body(carry, mb):
            g_acc, a_acc = carry
            g, a = one(mb)
            return (jax.tree.map(jnp.add, g_acc, g), _combine(a_acc, a)), None

        rest = jax.tree.map(lambda x: x[1:], parts)
        (grads, records), _ = jax.lax.scan(body, (grads, records), rest)

    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(records.total) & jnp.isfinite(grad_norm)
    updates, new_opt = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = dataclasses.replace(
        state,
        step=state.step + finite.astype(jnp.int32),
        params=keep(new_params, state.params),
        opt_state=keep(new_opt, state.opt_state),
        nonfinite_skips=state.nonfinite_skips + (~finite).astype(jnp.int32),
    )
    metrics = _finalize_metrics(records)
    metrics.update(grad_norm=grad_norm, skipped=(~finite).astype(jnp.float32),
                   learning_rate=learning_rate_schedule(config.optimizer)(state.step))
    return new_state, metrics


def _finalize_metrics(records: LossRecords) -> dict[str, Array]:
    """Flat metrics: `<term>_loss` per term, each diagnostic averaged over its term's tokens."""
    out: dict[str, Array] = {"loss": records.total}
    for name, rec in records.terms.items():
        out[name if "entropy" in name else f"{name}_loss"] = rec.value
        for k, v in rec.token_sums.items():
            out[k] = v / jnp.maximum(rec.tokens, 1.0)
    out["tokens"] = records.terms["grpo"].tokens
    out["sdl_tokens"] = records.terms["sdl"].tokens
    if "choice_entropy" in records.terms:
        out["choice_positions"] = records.terms["choice_entropy"].tokens
    out["ratio_min"] = jnp.where(jnp.isfinite(records.ratio_min), records.ratio_min, 0.0)
    out["ratio_max"] = jnp.where(jnp.isfinite(records.ratio_max), records.ratio_max, 0.0)
    return out


def make_train_step(graphdef: Any, tx: optax.GradientTransformation, config: StepConfig, *,
                    state_shardings: Any = None, batch_shardings: Any = None, donate: bool = True, jit: bool = True):
    """The jitted step with static settings bound, explicit shardings when given, the state donated."""
    fn = functools.partial(train_step, graphdef=graphdef, tx=tx, config=config)
    if not jit:
        return fn
    kw: dict[str, Any] = {}
    if state_shardings is not None:
        kw.update(in_shardings=(state_shardings, batch_shardings), out_shardings=(state_shardings, None))
    return jax.jit(fn, donate_argnums=0 if donate else (), **kw)

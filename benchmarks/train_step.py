"""Train-step throughput: one Skill-SD step (teacher scoring + student update) vs the same in PyTorch eager.

    python -m benchmarks.train_step [--shape tiny|small] [--batch 8] [--seq 512] [--micro-batches 1]
                                    [--dtype float32|bfloat16] [--steps 3] [--no-reference] [--json]

A step is what the trainer does per batch (docs/benchmarks.md): a no-grad TEACHER forward scoring the
sampled tokens under the teacher rows (jitted `score`), then the jitted `train_step` (student
forward + backward of GRPO + SDL, AdamW with clipping). The reference does the same on the same HF
Qwen3 weights in PyTorch eager: `torch.no_grad()` teacher log-probs, student log-probs, PPO-clip +
importance-weighted k3 loss, backward, global-norm clip, `torch.optim.AdamW`.

Figures: tokens/s = batch x seq / step seconds (median of `--steps` timed steps after one warm-up);
`compile_s` is the first step's wall time (compilation included). MFU counts 3 forward passes for
the student (forward + backward) and 1 for the teacher, `ModelConfig.flops_per_token(seq)` each,
against the fp32 matrix-product peak measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np

LR, WEIGHT_DECAY, MAX_GRAD_NORM, EPS_CLIP, SDL_COEF = 1e-6, 0.01, 1.0, 0.2, 1e-3


@dataclasses.dataclass(frozen=True)
class Rows:
    """Host arrays of one synthetic step: student rows, teacher rows (skill block instead of part of the
    prompt, same length so `teacher_index` is the identity), masks and per-token constants."""

    ids: np.ndarray  # [B,T] int32 student rows
    teacher_ids: np.ndarray  # [B,T] int32 teacher rows: same response tokens, different prompt
    attention_mask: np.ndarray  # [B,T] int32
    loss_mask: np.ndarray  # [B,T] float32, the response tokens
    old_logp: np.ndarray  # [B,T] float32, behaviour log-probs (filled from the model before timing)
    advantages: np.ndarray  # [B] float32
    sdl_mask: np.ndarray  # [B] float32


def make_rows(batch: int, seq: int, vocab: int, seed: int = 0) -> Rows:
    """Full-length rows: a prompt of a quarter of the sequence, the rest response (trained)."""
    if batch < 1 or seq < 4:
        raise ValueError(f"train-step benchmark needs batch >= 1 and seq >= 4, got batch={batch} seq={seq}")
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (batch, seq)).astype(np.int32)
    prompt = max(1, seq // 4)
    teacher_ids = ids.copy()
    teacher_ids[:, :prompt] = rng.integers(1, vocab, (batch, prompt))  # the skill block shifts the prompt
    loss_mask = np.zeros((batch, seq), np.float32)
    loss_mask[:, prompt:] = 1.0
    return Rows(ids=ids, teacher_ids=teacher_ids, attention_mask=np.ones((batch, seq), np.int32), loss_mask=loss_mask,
                old_logp=np.zeros((batch, seq), np.float32), advantages=rng.normal(0, 1, batch).astype(np.float32),
                sdl_mask=(np.arange(batch) % 4 != 3).astype(np.float32))  # 3 of 4 tasks have a skill


def _time_steps(step: Callable[[], Any], steps: int) -> tuple[float, float]:
    """(first-call seconds, median seconds of the next `steps` calls); `step` blocks until done."""
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def bench_ours(model, rows: Rows, micro_batches: int, steps: int) -> tuple[float, float]:
    """(first step seconds incl. compile, median step seconds) of jitted score + jitted train_step."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from skillsd_jax.train import (LossConfig, OptimizerConfig, StepConfig, TeacherSyncConfig, TrainBatch,
                                   init_state, make_optimizer, make_score_fn, make_train_step)

    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    opt = OptimizerConfig(learning_rate=LR, weight_decay=WEIGHT_DECAY, max_grad_norm=MAX_GRAD_NORM)
    cfg = StepConfig(loss=LossConfig(eps_low=EPS_CLIP, eps_high=EPS_CLIP, sdl_coef=SDL_COEF), optimizer=opt,
                     micro_batches=micro_batches)
    tx = make_optimizer(opt)
    score = make_score_fn(graphdef)
    train_step = make_train_step(graphdef, tx, cfg)
    put = lambda x: jax.device_put(jnp.asarray(x))
    ids, t_ids, am = put(rows.ids), put(rows.teacher_ids), put(rows.attention_mask)
    # Behaviour log-probs: the sampler's, i.e. the current policy's (ratio ~1, as at a real first step).
    old = score(params, ids, am) * put(rows.loss_mask)
    batch = TrainBatch(input_ids=ids, attention_mask=am, loss_mask=put(rows.loss_mask), old_logp=old,
                       teacher_logp=old, advantages=put(rows.advantages), sdl_mask=put(rows.sdl_mask))
    holder = {"state": init_state(params, tx, TeacherSyncConfig())}

    def step() -> None:
        state = holder["state"]
        # Hard sync every step (the paper's default): the teacher is the pre-update policy.
        teacher = score(state.params, t_ids, am)
        holder["state"], metrics = train_step(state, dataclasses.replace(batch, teacher_logp=teacher))
        metrics["loss"].block_until_ready()

    first, median = _time_steps(step, steps)
    loss = float(train_step(holder["state"], batch)[1]["loss"])
    if not np.isfinite(loss):
        raise RuntimeError(f"the benchmarked step produced a non-finite loss ({loss})")
    return first, median


def _torch_aligned_logprobs(model, ids, attention_mask):
    """`[:, t]` = log p(ids[t] | ids[<t]), position 0 gets 0 (the same alignment as our `score`)."""
    import torch

    logits = model(input_ids=ids, attention_mask=attention_mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    return torch.cat([torch.zeros_like(logp[:, :1]), logp], dim=1)


def _torch_loss(logp, old, teacher, adv, mask, sdl_mask):
    """GRPO PPO-clip (token mean) + SDL_COEF x importance-weighted k3 on SDL rows (straight-through)."""
    import torch

    ratio = torch.exp(torch.clamp(logp - old, -20.0, 20.0))
    a = adv[:, None]
    pg = torch.maximum(-a * ratio, -a * torch.clamp(ratio, 1 - EPS_CLIP, 1 + EPS_CLIP))
    pg_loss = (pg * mask).sum() / mask.sum().clamp(min=1)
    lp = logp.detach()
    gap = lp - teacher
    rho = torch.exp(torch.clamp(lp - old, -20.0, 20.0))
    value = rho * (torch.expm1(-gap.clamp(-20, 20)) + gap)
    surrogate = rho * gap * (logp - lp)  # gradient rho * gap wrt logp, value 0
    sm = mask * sdl_mask[:, None]
    sdl = ((value + surrogate) * sm).sum() / sm.sum().clamp(min=1)
    return pg_loss + SDL_COEF * sdl


def bench_torch(model, rows: Rows, steps: int) -> tuple[float, float]:
    """(first step seconds, median step seconds) of the PyTorch eager step on the reference model."""
    import torch

    from benchmarks.shapes import cpu_threads

    torch.set_num_threads(cpu_threads())
    t = lambda x: torch.from_numpy(np.ascontiguousarray(x))
    ids, t_ids, am = t(rows.ids).long(), t(rows.teacher_ids).long(), t(rows.attention_mask).long()
    mask, adv, sdl_mask = t(rows.loss_mask), t(rows.advantages), t(rows.sdl_mask)
    with torch.no_grad():
        old = _torch_aligned_logprobs(model, ids, am) * mask
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)

    def step() -> None:
        with torch.no_grad():
            teacher = _torch_aligned_logprobs(model, t_ids, am)
        logp = _torch_aligned_logprobs(model, ids, am)
        loss = _torch_loss(logp, old, teacher, adv, mask, sdl_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        opt.step()

    return _time_steps(step, steps)


def main(argv: Sequence[str] | None = None) -> dict:
    from benchmarks.matmul_peak import jax_matmul_gflops
    from benchmarks.shapes import SHAPES, cpu_threads, emit, host_load, jax_model_like, model_config, torch_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--micro-batches", type=int, default=1)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up step (median reported)")
    ap.add_argument("--peak-n", type=int, default=2048, help="matrix size of the matmul-peak measurement")
    ap.add_argument("--no-reference", action="store_true", help="skip the PyTorch reference")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    load_start = host_load()
    if args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    if args.micro_batches < 1 or args.batch % args.micro_batches:
        ap.error(f"--batch {args.batch} must be a positive multiple of --micro-batches {args.micro_batches}")

    import jax
    import jax.numpy as jnp

    ref_model = None if args.no_reference else torch_model(args.shape)
    model = jax_model_like(ref_model, args.shape, dtype=jnp.dtype(args.dtype))
    rows = make_rows(args.batch, args.seq, model.config.vocab_size)
    tokens = args.batch * args.seq
    peak = jax_matmul_gflops(args.peak_n, "float32")
    first, median = bench_ours(model, rows, args.micro_batches, args.steps)
    # Student forward + backward = 3 forwards, teacher = 1 (the convention of docs/benchmarks.md).
    flops_per_token = 4.0 * model_config(args.shape).flops_per_token(args.seq)
    result: dict[str, Any] = {
        "benchmark": "train_step", "shape": args.shape, "device": str(jax.devices()[0].device_kind),
        "batch": args.batch, "seq": args.seq, "micro_batches": args.micro_batches, "dtype": args.dtype,
        "steps": args.steps, "step_s": median, "tokens_per_s": tokens / median, "compile_s": first,
        "flops_per_token": flops_per_token, "matmul_peak_gflops": peak,
        "mfu_of_measured_peak": tokens / median * flops_per_token / (peak * 1e9),
        "reference": None, "reference_tokens_per_s": None, "ratio": None,
    }
    if ref_model is not None:
        ref_first, ref_median = bench_torch(ref_model, rows, args.steps)
        result.update(reference="pytorch-eager", reference_dtype="float32", reference_step_s=ref_median,
                      reference_tokens_per_s=tokens / ref_median, reference_first_step_s=ref_first,
                      ratio=ref_median / median,
                      reference_mfu_of_measured_peak=tokens / ref_median * flops_per_token / (peak * 1e9))
    # Load before this run started (other work on the cores disturbs the figures) and at its end (ours included).
    result.update(cpu_threads=cpu_threads(), load_avg_1m_start=load_start, load_avg_1m_end=host_load())
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()

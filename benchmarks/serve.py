"""The OpenAI-compatible server under load: requests/s, generated tokens/s and p50/p99 latency at 1, 16 and
64 concurrent clients, next to the sampler's own tokens/s for one `generate` call of the same batch.

    python -m benchmarks.serve [--shape tiny] [--clients 1,16,64] [--requests-per-client 4] [--prompt 128]
                               [--new 64] [--max-batch 64] [--in-process] [--json]

The server runs as `python -m skillsd_jax.serve` in its own process (its own interpreter, as deployed)
over a random checkpoint of the shape with the project tokenizer; `--in-process` starts it in this
process instead (quicker, for the smoke test). Each client sends `/v1/completions` requests one after
another (token-id prompts of `--prompt` tokens, greedy, `ignore_eos` so every answer has `--new` tokens)
over its own keep-alive connection. Warm-up rounds at 1, 2, 4, ... clients compile every batch
bucket a crowd can be split into before anything is timed. The ceiling at concurrency C is the sampler
generating min(C, max-batch) rows of the same lengths in one call, timed in this process right after
that level's run while the server idles: what the server would reach if HTTP, tokenizing, batching
and waiting for batch-mates cost nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MODEL_NAME = "bench"


def _percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


async def _load(url: str, clients: int, per_client: int, prompts: list[list[int]], new_tokens: int
                ) -> dict[str, Any]:
    """`clients` closed-loop clients, `per_client` requests each: throughput and latency."""
    import httpx2

    latencies: list[float] = []
    tokens = 0
    body = {"model": _MODEL_NAME, "max_tokens": new_tokens, "temperature": 0, "ignore_eos": True}
    limits = httpx2.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx2.AsyncClient(base_url=url, limits=limits, timeout=600) as http:
        async def client(c: int) -> None:
            nonlocal tokens
            for r in range(per_client):
                prompt = prompts[(c * per_client + r) % len(prompts)]
                t0 = time.perf_counter()
                resp = await http.post("/v1/completions", json={**body, "prompt": prompt})
                latencies.append(time.perf_counter() - t0)
                if resp.status_code != 200:
                    raise RuntimeError(f"the server answered {resp.status_code}: {resp.text[:300]}")
                tokens += resp.json()["usage"]["completion_tokens"]

        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        wall = time.perf_counter() - t0
    n = clients * per_client
    return {"clients": clients, "requests": n, "requests_per_s": n / wall, "tokens_per_s": tokens / wall,
            "p50_ms": 1e3 * _percentile(latencies, 50), "p99_ms": 1e3 * _percentile(latencies, 99),
            "tokens_per_request": tokens / n}


def _sampler_ceiling(model, prompts: list[list[int]], batch: int, new_tokens: int, repeats: int) -> float:
    """Generated tokens/s of one sampler call with `batch` rows (best of `repeats`, after a compile run)."""
    from skillsd_jax.sampling import Sampler, SamplingParams

    sampler, params = Sampler.for_model(model)
    rows = [prompts[i % len(prompts)] for i in range(batch)]
    greedy = SamplingParams.make(temperature=0.0)  # no stop tokens: every row generates `new_tokens`
    sampler.generate(params, rows, max_new_tokens=new_tokens, sampling=greedy)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = sampler.generate(params, rows, max_new_tokens=new_tokens, sampling=greedy)
        best = min(best, time.perf_counter() - t0)
    assert all(len(c.tokens) == new_tokens for c in out)
    return batch * new_tokens / best


class _Subprocess:
    """`python -m skillsd_jax.serve` on a free port, its log in a temporary file."""

    def __init__(self, ckpt: str, max_batch: int, new_tokens_limit: int, log_dir: str):
        self.log_path = os.path.join(log_dir, "server.log")
        cmd = [sys.executable, "-m", "skillsd_jax.serve", "--model", ckpt, "--port", "0", "--served-model-name",
               _MODEL_NAME, "--max-batch", str(max_batch), "--max-new-tokens-limit", str(new_tokens_limit),
               "--log-level", "INFO"]
        env = {**os.environ, "PYTHONPATH": _REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=_REPO)
        deadline = time.monotonic() + 300
        self.url = None
        while self.url is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the server did not start:\n" + self._log_tail())
            m = re.search(r"ready: (http://\S+)", open(self.log_path).read())
            self.url = m.group(1) if m else None
            time.sleep(0.1)

    def _log_tail(self) -> str:
        return open(self.log_path).read()[-3000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main(argv: Sequence[str] | None = None) -> dict:
    from benchmarks.shapes import SHAPES, emit, jax_model_like

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    ap.add_argument("--clients", default="1,16,64", help="comma-separated concurrency levels")
    ap.add_argument("--requests-per-client", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=64, help="the server's rows per sampler call")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each sampler ceiling call")
    ap.add_argument("--in-process", action="store_true", help="run the server in this process")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        levels = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        ap.error(f"--clients must be comma-separated integers, got {args.clients!r}")
    if not levels or min(levels) < 1 or args.requests_per_client < 1 or args.new < 1 or args.prompt < 1:
        ap.error("--clients levels, --requests-per-client, --new and --prompt must be >= 1")

    import jax

    from skillsd_jax.models import save_hf_model
    from skillsd_jax.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    model = jax_model_like(None, args.shape)
    if len(tokenizer) > model.config.vocab_size:
        ap.error(f"shape {args.shape} has vocab {model.config.vocab_size} < the tokenizer's {len(tokenizer)}")
    if args.prompt + args.new > model.config.max_position_embeddings:
        ap.error(f"--prompt + --new exceeds the model's context of {model.config.max_position_embeddings}")
    rng = np.random.default_rng(0)
    prompts = rng.integers(1, len(tokenizer), (max(levels) * args.requests_per_client, args.prompt)).tolist()

    with tempfile.TemporaryDirectory() as tmp:
        if args.in_process:
            from skillsd_jax.serve import start_server

            server = start_server(model, tokenizer, served_model_name=_MODEL_NAME, max_batch=args.max_batch,
                                  max_new_tokens_limit=max(args.new, 16))
            url, close = server.url, server.close
        else:
            save_hf_model(model, os.path.join(tmp, "ckpt"), tokenizer=tokenizer)
            proc = _Subprocess(os.path.join(tmp, "ckpt"), args.max_batch, max(args.new, 16), tmp)
            url, close = proc.url, proc.close
        try:
            rows, warmed = [], set()
            for c in levels:
                # Warm-up: a crowd of c can be split over calls of any smaller batch bucket, so compile them
                # all (1, 2, 4, ... c) before timing; a compile inside the timed run would dominate p99.
                for b in [1 << k for k in range(min(c, args.max_batch).bit_length())] + [c]:
                    if b not in warmed:
                        asyncio.run(_load(url, b, 1, prompts, args.new))
                        warmed.add(b)
                row = asyncio.run(_load(url, c, args.requests_per_client, prompts, args.new))
                # Right after the timed run (the server idles), so both see the same machine load.
                row["ceiling_tokens_per_s"] = _sampler_ceiling(model, prompts, min(c, args.max_batch), args.new,
                                                               args.repeats)
                row["share_of_ceiling"] = row["tokens_per_s"] / row["ceiling_tokens_per_s"]
                rows.append(row)
        finally:
            close()
    result: dict[str, Any] = {"benchmark": "serve", "shape": args.shape, "device": str(jax.devices()[0].device_kind),
                              "prompt": args.prompt, "new_tokens": args.new, "max_batch": args.max_batch,
                              "server": "in-process" if args.in_process else "subprocess"}
    for row in rows:
        c = row["clients"]
        result.update({f"c{c}_{k}": v for k, v in row.items() if k != "clients"})
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()

"""`python -m skillsd_jax.serve --model DIR`: serve a local HF-format checkpoint over the OpenAI API."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

import jax.numpy as jnp

from skillsd_jax.models import load_hf_model
from skillsd_jax.models.tokenizer import load_tokenizer
from skillsd_jax.serve.server import start_server

log = logging.getLogger("skillsd_jax.serve")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m skillsd_jax.serve", description=__doc__)
    p.add_argument("--model", required=True, help="checkpoint directory (config.json + safetensors)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the model's, else the project's tokenizer)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed at start)")
    p.add_argument("--served-model-name", help="the `model` name clients send (default: the model directory's name)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--max-batch", type=int, default=8, help="rows per sampler call")
    p.add_argument("--max-new-tokens-limit", type=int, default=1024, help="largest max_tokens a request may ask for")
    p.add_argument("--batch-window-ms", type=float, default=5.0,
                   help="when the device is idle, how long the first request waits for others to share its call")
    p.add_argument("--max-queued", type=int, default=256,
                   help="requests that may wait for the device; more are answered 429 with Retry-After")
    p.add_argument("--max-connections", type=int, default=2048, help="open connections; more are answered 503")
    p.add_argument("--max-body-bytes", type=int, default=4 << 20, help="larger request bodies are answered 413")
    p.add_argument("--shutdown-timeout-s", type=float, default=30.0,
                   help="on SIGINT/SIGTERM, how long running requests may take to finish")
    p.add_argument("--api-key-env", help="name of an environment variable holding the required Bearer key")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env) or None
        if api_key is None:
            log.error("--api-key-env %s: that environment variable is not set or empty", args.api_key_env)
            return 2
    if not os.path.isdir(args.model):
        log.error("--model %s is not a directory", args.model)
        return 2
    tok_dir = args.tokenizer
    if tok_dir is None and any(os.path.exists(os.path.join(args.model, f)) for f in _TOKENIZER_FILES):
        tok_dir = args.model
    tokenizer = load_tokenizer(tok_dir)
    model = load_hf_model(args.model, dtype=jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
    name = args.served_model_name or os.path.basename(os.path.normpath(args.model))

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    handle = start_server(model, tokenizer, host=args.host, port=args.port, served_model_name=name,
                          max_batch=args.max_batch, max_new_tokens_limit=args.max_new_tokens_limit,
                          batch_window_s=args.batch_window_ms / 1e3, api_key=api_key, max_queued=args.max_queued,
                          max_connections=args.max_connections, max_body_bytes=args.max_body_bytes)
    log.info("ready: %s (tokenizer %s)", handle.url, tok_dir or "project default")
    while not stop.wait(0.5):  # a timed wait lets the signal handler run promptly
        pass
    log.info("signal received: shutting down (running requests may take up to %.0f s)", args.shutdown_timeout_s)
    handle.close(timeout=args.shutdown_timeout_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())

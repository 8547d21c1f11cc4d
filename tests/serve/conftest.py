"""Shared fixtures: one tiny checkpoint, the model loaded from it, and one running server per session."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from serve_testlib import KEY, tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tok():
    from skillsd_jax.models.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory, tok):
    return tiny_checkpoint(str(tmp_path_factory.mktemp("tiny_serve")), tok)


@pytest.fixture(scope="session")
def model(ckpt):
    from skillsd_jax.models import load_hf_model

    return load_hf_model(ckpt)


@pytest.fixture(scope="session")
def server(model, tok):
    """The shared server: API key required, a 50 ms batching window, 64 KiB body limit, bodies due in 2 s."""
    from skillsd_jax.serve import start_server

    handle = start_server(model, tok, served_model_name="tiny", api_key=KEY, batch_window_s=0.05,
                          max_body_bytes=64 << 10, max_new_tokens_limit=512, body_timeout_s=2.0)
    yield handle
    handle.close()


@pytest.fixture(scope="session")
def direct(model):
    """(sampler, params) for generating without the server, to compare against."""
    from skillsd_jax.sampling import Sampler

    return Sampler.for_model(model)

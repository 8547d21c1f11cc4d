"""An OpenAI-compatible HTTP server over our Flax model and JAX sampler (`python -m skillsd_jax.serve`).

In-process (tests, notebooks)::

    handle = start_server(model, tokenizer, port=0)
    client = OpenAISummarizer(handle.url + "/v1", handle.model_name)
    ...
    handle.close()

HTTP is Starlette on uvicorn; `stream: true` answers with server-sent events (see `streaming`).
"""

from skillsd_jax.serve.batcher import Batcher, BatcherBusy, BatcherClosed
from skillsd_jax.serve.codec import TextCodec
from skillsd_jax.serve.protocol import APIError, GenerationRequest, ServeLimits
from skillsd_jax.serve.server import ServerHandle, start_server

__all__ = ["APIError", "Batcher", "BatcherBusy", "BatcherClosed", "GenerationRequest", "ServeLimits",
           "ServerHandle", "TextCodec", "start_server"]

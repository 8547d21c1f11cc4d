"""The Flax decoder (Qwen2/Qwen3/Llama families), its config, HF checkpoint I/O and tokenizers."""

from skillsd_jax.models.config import ModelConfig, UnsupportedConfigError
from skillsd_jax.models.hf_io import CheckpointError, load_hf_model, save_hf_model
from skillsd_jax.models.logprobs import chunked_logprobs, token_logprobs
from skillsd_jax.models.kv_cache import KVCache, SharedPrefix
from skillsd_jax.models.transformer import Transformer

__all__ = [
    "CheckpointError", "KVCache", "ModelConfig", "SharedPrefix", "Transformer", "UnsupportedConfigError",
    "chunked_logprobs", "load_hf_model", "save_hf_model", "token_logprobs",
]

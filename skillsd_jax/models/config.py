"""Model architecture config, read from and written to a Hugging Face `config.json`.

Covers the Qwen2/Qwen2.5, Qwen3 (dense) and Llama 3 decoder families. A field whose value changes the
architecture in a way this implementation does not support fails loudly, naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "llama")
SUPPORTED_ROPE_TYPES = ("default", "llama3", "linear")

# Fields of HF configs that carry no architecture (training-time or bookkeeping settings).
_IGNORED_HF_FIELDS = frozenset(
    {
        "_name_or_path", "architectures", "attention_dropout", "chunk_size_feed_forward", "dtype",
        "torch_dtype", "id2label", "label2id", "initializer_range", "is_encoder_decoder",
        "output_attentions", "output_hidden_states", "problem_type", "return_dict",
        "transformers_version", "use_cache", "max_window_layers", "pretraining_tp",
        "tokenizer_class", "pad_token_id", "bos_token_id", "eos_token_id", "layer_types",
        "sliding_window", "use_sliding_window", "model_type", "rope_parameters", "rope_scaling",
        "rope_theta", "head_dim", "attention_bias", "mlp_bias", "tie_word_embeddings",
        "hidden_act", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "rms_norm_eps", "max_position_embeddings",
        "generation_config", "quantization_config_applied", "tf_legacy_loss", "use_bfloat16",
        "torchscript", "finetuning_task", "prefix", "task_specific_params", "cross_attention_hidden_size",
        "add_cross_attention", "is_decoder", "tie_encoder_decoder", "pruned_heads", "chunk_size",
    }
)


class UnsupportedConfigError(ValueError):
    """A checkpoint config asks for something this model does not implement."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a decoder-only transformer (Qwen2/Qwen3/Llama families)."""

    model_type: str  # "qwen2" | "qwen3" | "llama"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: tuple[tuple[str, Any], ...] | None = None  # frozen dict of HF rope params (llama3/linear)
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True
    qkv_bias: bool = False  # Qwen2 always; Llama/Qwen3 via attention_bias
    o_bias: bool = False  # Llama/Qwen3 attention_bias also biases o_proj
    mlp_bias: bool = False  # Llama mlp_bias
    qk_norm: bool = False  # Qwen3 per-head RMSNorm on q and k
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedConfigError(
                f"model_type={self.model_type!r} is not supported; supported: {SUPPORTED_MODEL_TYPES}"
            )
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.rope_scaling is not None:
            rope_type = self.rope_scaling_dict.get("rope_type", "default")
            if rope_type not in SUPPORTED_ROPE_TYPES:
                raise UnsupportedConfigError(
                    f"rope_scaling.rope_type={rope_type!r} is not supported; supported: {SUPPORTED_ROPE_TYPES}"
                )

    @property
    def rope_scaling_dict(self) -> dict[str, Any]:
        return dict(self.rope_scaling or ())

    @property
    def num_params(self) -> int:
        """Parameter count (embeddings counted once when tied)."""
        d, f, h, kv, dh, v = (self.hidden_size, self.intermediate_size, self.num_heads,
                              self.num_kv_heads, self.head_dim, self.vocab_size)
        attn = d * h * dh + 2 * d * kv * dh + h * dh * d
        attn += (h * dh + 2 * kv * dh) * self.qkv_bias + d * self.o_bias + 2 * dh * self.qk_norm
        mlp = 3 * d * f + (2 * f + d) * self.mlp_bias
        per_layer = attn + mlp + 2 * d
        head = 0 if self.tie_word_embeddings else v * d
        return v * d + self.num_layers * per_layer + d + head

    def flops_per_token(self, seq_len: int) -> float:
        """Forward matmul FLOPs per token at context `seq_len` (the convention of docs/benchmarks.md).

        2 x (all weight matrices, the unembedding included, the input-embedding gather excluded)
        + 4 x layers x heads x head_dim x seq_len for attention scores and values (not halved for causality).
        """
        embed = self.vocab_size * self.hidden_size
        matmul_params = self.num_params - embed * (1 if self.tie_word_embeddings else 2) + embed
        return 2.0 * matmul_params + 4.0 * self.num_layers * self.num_heads * self.head_dim * seq_len

    # ------------------------------------------------------------------ HF round trip

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any] | str | os.PathLike, *, strict: bool = True) -> "ModelConfig":
        """Reads a HF `config.json` (a dict, a file path, or a checkpoint directory).

        `strict=True` rejects unknown fields; known fields with unsupported values are always rejected.
        """
        if not isinstance(hf, dict):
            path = os.fspath(hf)
            if os.path.isdir(path):
                path = os.path.join(path, "config.json")
            try:
                with open(path) as f:
                    hf = json.load(f)
            except FileNotFoundError:
                raise FileNotFoundError(f"no config.json at {path}") from None
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not valid JSON: {e}") from None
        hf = dict(hf)
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedConfigError(f"model_type={model_type!r} is not supported; supported: {SUPPORTED_MODEL_TYPES}")
        if strict:
            unknown = sorted(k for k in hf if k not in _IGNORED_HF_FIELDS)
            if unknown:
                raise UnsupportedConfigError(f"unsupported config field(s) {unknown} (pass strict=False to ignore)")

        def need(name: str) -> Any:
            if name not in hf or hf[name] is None:
                raise UnsupportedConfigError(f"config field {name!r} is required but missing")
            return hf[name]

        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise UnsupportedConfigError(f"hidden_act={act!r} is not supported (only 'silu')")
        if hf.get("use_sliding_window"):
            raise UnsupportedConfigError("use_sliding_window=True is not supported (sliding-window attention)")
        layer_types = hf.get("layer_types")
        if layer_types and any(t != "full_attention" for t in layer_types):
            raise UnsupportedConfigError(f"layer_types={sorted(set(layer_types))} is not supported (only 'full_attention')")
        if int(hf.get("pretraining_tp", 1) or 1) != 1:
            raise UnsupportedConfigError("pretraining_tp != 1 is not supported")

        hidden, heads = int(need("hidden_size")), int(need("num_attention_heads"))
        head_dim = hf.get("head_dim") or hidden // heads
        rope_theta, rope_scaling = _read_rope(hf)
        attention_bias = bool(hf.get("attention_bias", False))
        return cls(
            model_type=model_type,
            vocab_size=int(need("vocab_size")),
            hidden_size=hidden,
            intermediate_size=int(need("intermediate_size")),
            num_layers=int(need("num_hidden_layers")),
            num_heads=heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", model_type != "llama")),
            qkv_bias=True if model_type == "qwen2" else attention_bias,
            o_bias=False if model_type == "qwen2" else attention_bias,
            mlp_bias=bool(hf.get("mlp_bias", False)),
            qk_norm=model_type == "qwen3",
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
            pad_token_id=hf.get("pad_token_id"),
        )

    def to_hf_config(self) -> dict[str, Any]:
        """A `config.json` dict that `transformers.AutoConfig` / `AutoModelForCausalLM` load back."""
        arch = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM"}[self.model_type]
        rope = {"rope_type": "default", **self.rope_scaling_dict, "rope_theta": self.rope_theta}
        out: dict[str, Any] = {
            "architectures": [arch],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": rope,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "use_cache": True,
        }
        if self.model_type == "qwen2":
            if self.o_bias or not self.qkv_bias:
                raise UnsupportedConfigError("qwen2 has q/k/v biases and no o_proj bias; cannot export this variant")
            out["use_sliding_window"] = False
        else:
            if self.qkv_bias != self.o_bias:
                raise UnsupportedConfigError(f"{self.model_type} biases q/k/v/o together (attention_bias); cannot export")
            out["attention_bias"] = self.qkv_bias
        if self.model_type == "llama":
            out["mlp_bias"] = self.mlp_bias
        elif self.mlp_bias:
            raise UnsupportedConfigError(f"{self.model_type} has no mlp_bias; cannot export")
        if (self.model_type == "qwen3") != self.qk_norm:
            raise UnsupportedConfigError("qk_norm is exactly the qwen3 family; cannot export this variant")
        return out

    def save(self, directory: str | os.PathLike) -> None:
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(self.to_hf_config(), f, indent=2, sort_keys=True)


def _read_rope(hf: dict[str, Any]) -> tuple[float, tuple[tuple[str, Any], ...] | None]:
    """rope_theta and scaling from either transformers-5 `rope_parameters` or legacy `rope_theta`/`rope_scaling`."""
    params = dict(hf.get("rope_parameters") or {})
    legacy = hf.get("rope_scaling")
    if legacy:
        params = {**dict(legacy), **params}
    theta = float(params.pop("rope_theta", hf.get("rope_theta", 10000.0)))
    if "type" in params and "rope_type" not in params:  # very old configs
        params["rope_type"] = params.pop("type")
    rope_type = params.get("rope_type", "default")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise UnsupportedConfigError(f"rope_scaling.rope_type={rope_type!r} is not supported; supported: {SUPPORTED_ROPE_TYPES}")
    if rope_type == "default":
        return theta, None
    required = {"llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
                "linear": ("factor",)}[rope_type]
    for key in required:
        if key not in params:
            raise UnsupportedConfigError(f"rope_scaling.{key} is required for rope_type={rope_type!r}")
    if not math.isfinite(float(params["factor"])) or float(params["factor"]) <= 0:
        raise UnsupportedConfigError(f"rope_scaling.factor must be positive, got {params['factor']!r}")
    return theta, tuple(sorted(params.items()))

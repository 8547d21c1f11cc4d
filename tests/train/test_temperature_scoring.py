"""The trainer scores sampled tokens under the distribution the sampler drew them from."""

import numpy as np
import pytest
from flax import nnx

from skillsd_jax.models import ModelConfig, Transformer
from skillsd_jax.sampling import Sampler, SamplingParams
from skillsd_jax.train import make_score_fn


@pytest.mark.parametrize("temperature", [0.6, 1.5])
def test_trainer_logprobs_follow_the_sampling_temperature(temperature):
    cfg = ModelConfig(model_type="qwen3", vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1,
                      num_heads=2, num_kv_heads=1, head_dim=16, qk_norm=True, tie_word_embeddings=True)
    model = Transformer(cfg, rngs=nnx.Rngs(1))
    sampler, params = Sampler.for_model(model)
    prompts = [[5, 9, 11, 3], [7, 2]]
    comps = sampler.generate(params, prompts, max_new_tokens=6, sampling=SamplingParams(temperature=temperature),
                             seed=3)
    width = max(len(p) + len(c.tokens) for p, c in zip(prompts, comps))
    ids = np.zeros((2, width), np.int32)
    mask = np.zeros((2, width), np.int32)
    for r, (p, c) in enumerate(zip(prompts, comps)):
        row = list(p) + list(c.tokens)
        ids[r, :len(row)], mask[r, :len(row)] = row, 1
    graphdef, _ = nnx.split(model)
    tempered = np.asarray(make_score_fn(graphdef, temperature=temperature)(params, ids, mask))
    plain = np.asarray(make_score_fn(graphdef)(params, ids, mask))
    for r, (p, c) in enumerate(zip(prompts, comps)):
        got = tempered[r, len(p):len(p) + len(c.tokens)]
        np.testing.assert_allclose(got, c.logprobs, atol=1e-4)
        # The negative control: scored at T=1 the same tokens have other log-probs.
        assert np.abs(plain[r, len(p):len(p) + len(c.tokens)] - np.asarray(c.logprobs)).max() > 1e-2

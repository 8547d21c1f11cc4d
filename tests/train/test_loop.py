"""The training loop end to end: iterations, checkpoint, restore, resume; methods; config errors."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from configs.sokoban import get_config
from skillsd_jax.train.config_utils import set_fields
from skillsd_jax.train.loop import Trainer

MICRO = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 4096, "hidden_size": 32,
         "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
         "head_dim": 16, "rms_norm_eps": 1e-6, "max_position_embeddings": 2048, "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def micro_model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("micro_model")
    (d / "config.json").write_text(json.dumps(MICRO))
    return str(d)


def _config(micro_model_dir, workdir, method="skill_sd", **overrides):
    c = get_config(f"method={method},smoke")
    c.model.path = micro_model_dir
    c.workdir = str(workdir)
    c.progress_bar = False
    c.warmstart.steps = 3
    c.eval.every = 0
    c.eval.at_end = False
    c.checkpoint.every = 1
    c.skills.credit = "same_step"  # credit skills within these few iterations
    return set_fields(c, overrides)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_run_checkpoint_restore_resume(micro_model_dir, tmp_path):
    """Two iterations with checkpoints, a fresh process-like Trainer resumes to three, and the result
    equals an uninterrupted three-iteration run (params, optimizer, skill bank, task order)."""
    full = Trainer(_config(micro_model_dir, tmp_path / "full", num_iterations=3))
    full.run()
    want_params, want_tasks = _leaves(full.state.params), full.tasks.state_dict()
    want_skills = len(full.bank)
    full.close()

    first = Trainer(_config(micro_model_dir, tmp_path / "split", num_iterations=2))
    m2 = first.run()
    assert first.iteration == 2 and first.checkpointer.latest() == 2
    assert m2["rows/count"] > 0 and np.isfinite(m2["loss/loss"])
    first.close()

    resumed = Trainer(_config(micro_model_dir, tmp_path / "split", num_iterations=3))
    assert resumed.restore() and resumed.iteration == 2
    resumed.run()
    assert resumed.iteration == 3
    for a, b in zip(_leaves(resumed.state.params), want_params):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert resumed.tasks.state_dict() == want_tasks and len(resumed.bank) == want_skills
    # One metrics row per iteration (and the warm-up rows at iteration 0): nothing duplicated by the resume.
    rows = [json.loads(line) for line in open(tmp_path / "split" / "metrics.jsonl")]
    assert [r["iteration"] for r in rows if r["iteration"] > 0] == [1, 2, 3]
    assert os.path.exists(tmp_path / "split" / "curves.png")
    resumed.close()


@pytest.mark.parametrize("method", ["grpo", "opd", pytest.param("skill_grpo", marks=pytest.mark.slow),
                                    pytest.param("skill_sd_offpolicy", marks=pytest.mark.slow),
                                    pytest.param("opsd_grpo", marks=pytest.mark.slow),
                                    pytest.param("skill_sd_frozen", marks=pytest.mark.slow)])
def test_methods_run_one_iteration(micro_model_dir, tmp_path, method):
    overrides = {"checkpoint.every": 0}
    if method == "grpo":  # tasks from a tfds level dataset (array_record, read without TensorFlow)
        from skillsd_jax.data.sokoban_levels import build_sokoban_levels

        build_sokoban_levels("verl_agent", tmp_path / "data", num_levels={"train": 3, "test": 2})
        overrides.update({"env.task_dataset": "sokoban_levels/verl_agent", "env.data_dir": str(tmp_path / "data"),
                          "eval.at_end": True, "ppo.minibatches": 2,  # two PPO steps an iteration
                          "eval.temperature": 1.0, "eval.greedy_too": True})  # sampled and greedy evaluation
    t = Trainer(_config(micro_model_dir, tmp_path / "run", method=method, num_iterations=1, **overrides))
    m = t.run()
    t.close()
    assert np.isfinite(m["loss/loss"])
    if method == "grpo":
        assert m["loss/sdl_loss"] == 0.0 and t.bank is None
        assert t.train_seeds == [0, 1, 2] and t.eval_seeds == [0, 1] and m["eval/episodes"] == 2
        assert 0.0 <= m["eval/success_ci95_lo"] <= m["eval/success_rate"] <= m["eval/success_ci95_hi"] <= 1.0
        assert os.listdir(tmp_path / "run" / "tensorboard")  # event files beside metrics.jsonl
        assert int(t.state.step) == 2  # one iteration, two PPO minibatches: two optimizer steps
        assert m["eval_greedy/episodes"] == 2 and 0.0 <= m["eval_greedy/success_rate"] <= 1.0
        # The blind reference on the same levels, cut at the rollout's turn limit (16 episodes a level).
        from skillsd_jax.envs.blind import blind_success_rate
        from skillsd_jax.train.builders import env_factory

        assert m["eval/blind_episodes"] == 32
        assert m["eval/blind_success_rate"] == blind_success_rate(env_factory(t.config.env, "eval"), [0, 1], repeats=16,
                                                                  max_turns=t.config.rollout.max_turns)
    if method == "opd":  # privileged teacher on every row, no GRPO term
        assert m["rows/sdl_rows"] == m["rows/count"]
        assert m["loss/sdl_loss"] > 0.0


def test_config_errors_name_the_field(micro_model_dir, tmp_path):
    with pytest.raises(ValueError, match="method"):
        Trainer(_config(micro_model_dir, tmp_path, method="magic"))
    c = _config(micro_model_dir, tmp_path)
    c.loss.sdl_kind = "exotic"
    with pytest.raises(ValueError, match="sdl_kind"):
        Trainer(c)
    c = _config(micro_model_dir, tmp_path)
    c.env.name = "chess"
    with pytest.raises(ValueError, match="chess"):
        Trainer(c)
    with pytest.raises(ValueError, match="blind_repeats"):
        Trainer(_config(micro_model_dir, tmp_path, **{"eval.blind_repeats": -1}))


def test_choice_entropy_words_become_single_token_ids():
    """The Sokoban config's move words and the `<action>` tag turn into their token ids; a word the
    tokenizer splits is a clear error naming it (the term scores one position)."""
    from skillsd_jax.models.tokenizer import load_tokenizer
    from skillsd_jax.train.builders import loss_config

    tok = load_tokenizer()
    c = get_config()
    c.loss.choice_entropy_coef = 0.0
    assert loss_config(c, tok).choice_tokens == ()  # off: nothing resolved
    c.loss.choice_entropy_coef = 0.01
    loss = loss_config(c, tok, temperature=1.0)
    assert loss.choice_after_token == tok.convert_tokens_to_ids("<action>")
    assert loss.choice_tokens == tuple(tok.convert_tokens_to_ids(w) for w in ("up", "down", "left", "right"))
    assert [tok.decode([i]) for i in loss.choice_tokens] == ["up", "down", "left", "right"]
    c.loss.choice_words = ("up", "northwestward")
    with pytest.raises(ValueError, match="northwestward"):
        loss_config(c, tok)

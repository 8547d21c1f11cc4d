"""The paper-scale Sokoban recipe: its settings, and its smoke variant running on the tiny random model."""

import pytest

from configs.sokoban_paper import get_config
from skillsd_jax.train.loop import Trainer


def test_paper_recipe_settings():
    c = get_config("model=/ckpt/Qwen3-4B-Instruct-2507,mesh=gpu8")
    assert c.model.path == c.tokenizer == "/ckpt/Qwen3-4B-Instruct-2507" and not c.model.random_init
    assert c.model.dtype == "bfloat16" and c.env.kwargs.preset == "skill_sd"
    assert c.env.num_train_tasks == 96 and c.eval.num_tasks == 64 and c.num_iterations == 400
    assert c.skills.backend == "openai" and c.loss.sdl_coef == 1e-3 and c.teacher_sync.every == 1
    assert (c.mesh.data, c.mesh.fsdp, c.mesh.tensor) == (1, 8, 1)
    assert get_config("mesh=tpu").mesh.fsdp == -1
    with pytest.raises(ValueError, match="mesh"):
        get_config("mesh=moon")


def test_paper_recipe_smoke_runs(tmp_path):
    c = get_config("smoke")
    c.workdir = str(tmp_path)
    c.progress_bar = False
    c.num_iterations = 1
    c.eval.every = 0
    c.eval.at_start = False
    c.eval.num_tasks = 2
    c.checkpoint.every = 0
    t = Trainer(c)
    try:
        m = t.run()
    finally:
        t.close()
    assert m["rows/count"] > 0 and m["train/episodes"] == 8 and "rollout_correction/kl_k3" in m
    assert m["eval/episodes"] == 2

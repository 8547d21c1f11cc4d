"""`skillsd-export` (checkpoint -> HF directory that transformers reloads with the same logits) and
`skillsd-eval` (the same results from a checkpoint and from its export; the Wilson interval; errors)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.sokoban import get_config
from skillsd_jax.cli import compare as compare_cli
from skillsd_jax.cli import evaluate as eval_cli
from skillsd_jax.cli import export as export_cli
from skillsd_jax.models.tokenizer import load_tokenizer
from skillsd_jax.train import builders, init_state, make_optimizer, OptimizerConfig, TeacherSyncConfig
from skillsd_jax.train.checkpoint import Checkpointer

MICRO = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 4096, "hidden_size": 32,
         "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
         "head_dim": 16, "rms_norm_eps": 1e-6, "max_position_embeddings": 2048, "tie_word_embeddings": True}
ITERATION = 5
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _model_cfg(root):
    config = get_config("smoke")
    config.model.path = str(root / "model")
    return config.model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run workdir holding one checkpoint whose parameters differ from any fresh initialization."""
    root = tmp_path_factory.mktemp("cli_run")
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text(json.dumps(MICRO))
    model = builders.build_model(_model_cfg(root), 4096, None, seed=3)
    graphdef, state = nnx.split(model)
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(1), x.shape, x.dtype),
                          nnx.to_pure_dict(state))
    tx = make_optimizer(OptimizerConfig())
    checkpointer = Checkpointer(str(root / "run" / "checkpoints"))
    checkpointer.save(ITERATION, init_state(params, tx, TeacherSyncConfig()), {"iteration": ITERATION})
    checkpointer.close()
    return root, params


def _argv(root, *extra):
    return ["tool", f"--config={os.path.join('configs', 'sokoban.py')}:smoke",
            f"--config.model.path={root / 'model'}", *extra]


def test_export_reloads_in_transformers_with_the_same_logits(run_dir, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    root, params = run_dir
    out = tmp_path / "hf"
    result = export_cli.main(_argv(root, f"--checkpoint={root / 'run'}", f"--out={out}"))
    assert result["source"].endswith(f"@{ITERATION}")

    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), torch_dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    assert len(tokenizer) == len(load_tokenizer()) and tokenizer.chat_template
    ids = np.random.default_rng(0).integers(0, MICRO["vocab_size"], (2, 9)).astype(np.int32)
    with torch.no_grad():
        want = hf(torch.as_tensor(ids, dtype=torch.long)).logits.numpy()
    model = builders.build_model(_model_cfg(root), 4096, None, seed=0)
    graphdef, state = nnx.split(model)
    nnx.replace_by_pure_dict(state, params)  # the checkpointed parameters in our model
    ours = np.asarray(nnx.merge(graphdef, state)(jnp.asarray(ids), attention_mask=jnp.ones_like(ids)))
    np.testing.assert_allclose(ours, want, atol=2e-4, rtol=0)


def test_export_refuses_bad_input(run_dir, tmp_path):
    root, _ = run_dir
    with pytest.raises(SystemExit, match="--checkpoint and --out"):
        export_cli.main(_argv(root, f"--out={tmp_path / 'x'}"))
    with pytest.raises(SystemExit, match="no checkpoint 9"):
        export_cli.main(_argv(root, f"--checkpoint={root / 'run'}", "--step=9", f"--out={tmp_path / 'y'}"))
    with pytest.raises(SystemExit, match="not a directory with training checkpoints"):
        export_cli.main(_argv(root, f"--checkpoint={tmp_path / 'nothing'}", f"--out={tmp_path / 'z'}"))


def test_eval_checkpoint_and_its_export_agree(run_dir, tmp_path):
    root, _ = run_dir
    hf_dir = tmp_path / "hf"
    export_cli.main(_argv(root, f"--checkpoint={root / 'run'}", f"--out={hf_dir}"))
    out_file = tmp_path / "eval.json"
    common = ["--num_tasks=3", "--config.rollout.max_turns=2"]
    answers_file = tmp_path / "answers.jsonl"
    from_ckpt = eval_cli.main(_argv(root, f"--checkpoint={root / 'run'}", *common, f"--output={out_file}",
                                    f"--answers={answers_file}"))
    from_hf = eval_cli.main(_argv(root, f"--hf={hf_dir}", *common))
    assert json.loads(out_file.read_text()) == from_ckpt
    # Every turn's answer, consistent with the rates reported for the same episodes.
    answers = [json.loads(line) for line in answers_file.read_text().splitlines()]
    assert len({a["episode_id"] for a in answers}) == 3 and {a["turn"] for a in answers} <= {0, 1}
    assert np.mean([a["valid"] for a in answers]) == pytest.approx(from_ckpt["valid_action_rate"])
    assert all(isinstance(a["response"], str) and (a["action"] is None) != a["valid"] for a in answers)
    assert from_ckpt["num_episodes"] == 3 and from_ckpt["split"] == "test" and from_ckpt["env"] == "sokoban"
    assert 0.0 <= from_ckpt["success_ci95_lo"] <= from_ckpt["success_rate"] <= from_ckpt["success_ci95_hi"] <= 1.0
    # skillsd-compare reads the answers file as skillsd-eval writes it: a policy against itself differs by 0.
    same = compare_cli.main([str(answers_file), str(answers_file)])
    assert same["tasks"] == 3 and same["difference"] == 0.0 and same["a_success_rate"] == from_ckpt["success_rate"]
    # The blind reference on the same levels, cut at the same two turns (configs/sokoban.py: 16 a level).
    assert from_ckpt["blind_episodes"] == 48 and 0.0 <= from_ckpt["blind_success_rate"] <= 1.0
    # Greedy episodes of the same parameters: the same results whichever way the policy was loaded.
    skip = ("source", "seconds")
    assert {k: v for k, v in from_ckpt.items() if k not in skip} == {k: v for k, v in from_hf.items() if k not in skip}


def test_eval_needs_exactly_one_policy(run_dir, tmp_path):
    root, _ = run_dir
    with pytest.raises(SystemExit, match="exactly one of --checkpoint"):
        eval_cli.main(_argv(root))
    with pytest.raises(SystemExit, match="no config.json"):
        eval_cli.main(_argv(root, f"--hf={tmp_path}"))
    with pytest.raises(SystemExit, match="blind_repeats must be >= 0"):
        eval_cli.main(_argv(root, f"--hf={tmp_path}", "--config.eval.blind_repeats=-1"))
    for flag in ("output", "answers"):
        with pytest.raises(SystemExit, match=f"--{flag}=.*directory does not exist"):
            eval_cli.main(_argv(root, f"--hf={tmp_path}", f"--{flag}={tmp_path / 'missing' / 'x.json'}"))


def test_console_scripts_are_registered_and_start():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert {"skillsd-train", "skillsd-eval", "skillsd-export", "skillsd-compare"} <= set(scripts)
    assert callable(compare_cli.run) and scripts["skillsd-compare"] == "skillsd_jax.cli.compare:run"
    for name in ("skillsd-eval", "skillsd-export"):
        module, function = scripts[name].split(":")
        assert callable(getattr(importlib.import_module(module), function))
        # The console entry as a process: --help prints the usage and the tool's flags.
        out = subprocess.run([sys.executable, "-c", f"import {module}; {module}.{function}()", "--help"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and name in out.stdout and "--checkpoint" in out.stdout, out.stderr

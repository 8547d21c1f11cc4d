"""The examples run as written: the quickstart notebook (executed with nbclient) and the README's
"From a notebook" snippet (against a tiny HF directory standing in for the real checkpoint)."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README_MODEL_DIR = "/ckpt/Qwen3-0.6B"


def test_quickstart_notebook_executes(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = os.path.join(ROOT, "examples", "quickstart.ipynb")
    notebook = nbformat.read(path, as_version=4)
    # The kernel inherits this environment: CPU, and the notebook's default tiny model.
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("SKILLSD_MODEL_DIR", raising=False)
    nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "Boxes on targets" in text and "sdl_loss" in text
    assert any(o.output_type == "display_data" and "image/png" in o.data for o in outputs)


def test_readme_notebook_snippet_runs(tmp_path):
    from flax import nnx

    from skillsd_jax.models import ModelConfig, Transformer, save_hf_model

    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme[readme.index("### From a notebook"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert README_MODEL_DIR in code
    cfg = ModelConfig(model_type="qwen3", vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1,
                      num_heads=2, num_kv_heads=1, head_dim=16, qk_norm=True, tie_word_embeddings=True)
    save_hf_model(Transformer(cfg, rngs=nnx.Rngs(0)), tmp_path / "hf")
    scope: dict = {}
    exec(compile(code.replace(README_MODEL_DIR, str(tmp_path / "hf")), "README.md", "exec"), scope)
    metrics = scope["metrics"]
    assert np.isfinite(float(metrics["loss"])) and float(metrics["skipped"]) == 0.0
    assert float(metrics["sdl_tokens"]) == 16 and int(scope["train_state"].step) == 1

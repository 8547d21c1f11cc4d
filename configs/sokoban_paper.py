"""The Skill-SD paper's Sokoban setting at scale: Qwen3-4B-Instruct-2507 from a local HF directory.

Sokoban 6x6, 2 boxes, 96 training / 64 test levels, up to 40 steps, about 400 iterations, skills
written by an OpenAI-compatible LLM endpoint, bfloat16, the teacher synchronized every iteration.

    # one 8-GPU host (jax[cuda]): parameters and optimizer state sharded over the 8 GPUs (FSDP)
    launch/gpu.sh --config=configs/sokoban_paper.py:model=/ckpt/Qwen3-4B-Instruct-2507,mesh=gpu8 \
        --config.skills.openai.base_url=http://127.0.0.1:8000/v1 --config.skills.openai.model=summarizer
    # a TPU slice (v5p-16, say): every chip in the FSDP axis, the same command on every worker
    launch/tpu_pod.sh --config=configs/sokoban_paper.py:model=/ckpt/Qwen3-4B-Instruct-2507,mesh=tpu ...
    # the smoke variant: the embedded tiny random model, rule summarizer, a few iterations on CPU
    python -m skillsd_jax.main --config=configs/sokoban_paper.py:smoke --workdir=/tmp/paper_smoke

Switches (after the colon): `method=`, `model=<HF dir>`, `mesh=gpu8|tpu`, `smoke`.
"""

from __future__ import annotations

from configs.common import apply_smoke, base_config, parse_arg

MESHES = {
    "gpu8": dict(data=1, fsdp=8, tensor=1),  # one host, 8 GPUs
    "tpu": dict(data=1, fsdp=-1, tensor=1),  # every chip of the slice
}


def get_config(arg: str | None = None):
    switches = parse_arg(arg)
    c = base_config(arg)
    c.env.name = "sokoban"
    c.env.kwargs.preset = "skill_sd"  # 6x6, 2 boxes, 40 steps, 96 train / 64 test levels
    c.env.num_train_tasks = 96
    c.eval.num_tasks = 64
    c.eval.every = 25
    c.num_iterations = 400
    c.workdir = f"runs/sokoban_paper_{c.method}"

    model = switches.get("model", "/ckpt/Qwen3-4B-Instruct-2507")
    c.model.path = model
    c.model.random_init = False  # load the instruct model's weights (safetensors)
    c.tokenizer = model
    c.model.dtype = "bfloat16"
    c.model.remat = True
    mesh = switches.get("mesh", "gpu8")
    if mesh not in MESHES:
        raise ValueError(f"sokoban_paper: mesh={mesh!r} is unknown; choose one of {sorted(MESHES)}")
    c.mesh.update(MESHES[mesh])

    c.rollout.tasks_per_iteration = 16
    c.rollout.group_size = 8
    c.rollout.layout = c.rows.layout = "trajectory"
    c.rollout.max_response_tokens = 256  # reasoning + one action
    c.rollout.max_context_tokens = 12288  # 40 turns of observation + answer
    c.prompt.max_prompt_tokens = 1024
    c.prompt.max_guidance_tokens = 768
    c.micro_batches = 16
    c.recompute_old_logp = True  # bf16 sampler vs trainer: ratios against the trainer's own old log-probs
    c.rollout_correction.mode = "tis"  # and the truncated IS weight for the sampler/trainer gap
    c.optimizer.learning_rate = 1e-6
    c.optimizer.total_steps = c.num_iterations
    c.loss.sdl_coef = 1e-3  # the paper's lambda
    c.teacher_sync.mode, c.teacher_sync.every = "hard", 1
    c.warmstart.steps = 0  # an instruct model reads skills and answers in format already
    c.skills.backend = "openai"  # set skills.openai.base_url / model to the summarizer's endpoint
    c.checkpoint.every = 25

    if "smoke" in switches:  # the same recipe on the embedded tiny random model, for tests and laptops
        c.model.path = ""
        c.model.random_init = True
        c.tokenizer = ""
        c.model.dtype = "float32"
        c.model.remat = False
        c.mesh.update(dict(data=-1, fsdp=1, tensor=1))
        c.skills.backend = "rule"
        c.micro_batches = 1
        c.rollout.max_response_tokens = 16
        c.rollout.max_context_tokens = 2048
        apply_smoke(c)
        c.rollout.max_turns = 3
    return c

"""Shared defaults for every run config. Each env config calls `base_config(arg)` and overrides.

`arg` (the text after `:` in `--config=configs/sokoban.py:method=grpo,smoke`) is a comma list of
`key=value` switches and bare flags: `method=<name>`, `smoke` (shrink everything for a quick local run).
"""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (arg or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip() if value else "1"
    return out


def base_config(arg: str | None = None) -> ml_collections.ConfigDict:
    switches = parse_arg(arg)
    c = ml_collections.ConfigDict()
    c.method = switches.get("method", "skill_sd")  # grpo | opd | opsd_grpo | skill_grpo | skill_sd | skill_sd_frozen | skill_sd_offpolicy
    c.seed = 0  # everything random derives from it
    c.workdir = f"runs/{c.method}"  # checkpoints, metrics.jsonl, curves.png, skills.sqlite
    c.num_iterations = 400  # training iterations (rollout + update)
    c.budget_env_steps = 0  # >0: stop once training rollouts took this many environment steps (same budget per method)
    c.log_every = 1  # console line every N iterations
    c.progress_bar = True  # tqdm bar over iterations
    c.micro_batches = 1  # gradient accumulation steps per update (exact)
    # PPO-style updates: each iteration takes `epochs` passes over its rows in `minibatches` shuffled
    # parts, one optimizer step each (clipped against the rollout's log-probs); 1 x 1 = one step.
    c.ppo = ml_collections.ConfigDict(dict(minibatches=1, epochs=1))
    c.recompute_old_logp = False  # True: old log-probs from the trainer's forward instead of the sampler's
    c.tokenizer = ""  # HF tokenizer dir; "" = the project's small tokenizer

    c.model = ml_collections.ConfigDict()
    c.model.path = ""  # HF checkpoint dir (config.json + safetensors); "" = the embedded tiny config
    c.model.random_init = True  # initialize from path/config.json instead of loading weights
    c.model.dtype = "float32"  # float32 | bfloat16 (parameters and compute)
    c.model.remat = False  # rematerialize each layer in the backward pass

    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))  # device mesh ('data','fsdp','tensor')
    # CPU only: XLA devices the host is split into (0 = one per core), the batch sharded over them; on
    # 2 cores an iteration of the Sokoban job runs ~20% faster with 0 (README, rollout section), and
    # configs/sokoban.py uses 2. 1 keeps one device (another split changes the numerics).
    c.cpu_devices = 1
    # CPU only: the sampler's hand-written kernels (skillsd_jax/kernels, built with the system C++ compiler
    # on first use) for the attention of every chunk and a decode step's products: ~20-25% less sampler
    # time in the rollout benchmark on 2 cores (README, rollout section); they change sampled tokens in
    # their last bits (the recorded runs would not reproduce), so off by default.
    c.cpu_decode_kernel = False

    c.env = ml_collections.ConfigDict()
    c.env.name = "sokoban"  # a registered environment (skillsd_jax.envs.registered())
    c.env.kwargs = ml_collections.ConfigDict()  # passed to make(name, ...) for train and eval
    c.env.train_kwargs = ml_collections.ConfigDict(dict(split="train"))  # train-only kwargs
    c.env.eval_kwargs = ml_collections.ConfigDict(dict(split="test"))  # eval-only kwargs
    c.env.num_train_tasks = 0  # >0: shuffled epochs over seeds [0, n); 0: a fresh seed per task
    c.env.task_dataset = ""  # e.g. "sokoban_levels/skill_sd": task seeds from a tfds split (python -m skillsd_jax.data)
    c.env.data_dir = ""  # where task datasets live
    c.env.pool_backend = "thread"  # thread | process | ray
    c.env.num_workers = 0  # 0: backend default
    c.env.step_timeout_s = 0.0  # process/ray backends: kill a worker stuck longer than this (0: no limit)

    c.rollout = ml_collections.ConfigDict()
    c.rollout.tasks_per_iteration = 8  # B
    c.rollout.group_size = 8  # G episodes per task (a GRPO group)
    c.rollout.layout = "per_step"  # per_step (history window prompts) | trajectory (one growing sequence)
    c.rollout.max_turns = 0  # 0: the environment's own limit
    c.rollout.max_response_tokens = 128  # per turn
    c.rollout.temperature = 1.0
    c.rollout.top_p = 1.0
    c.rollout.top_k = 0
    c.rollout.max_context_tokens = 4096  # trajectory layout: truncate longer episodes
    c.rollout.compact_below = 0.5  # trajectory layout: shrink the sampler batch below this live fraction

    c.prompt = ml_collections.ConfigDict()
    c.prompt.history_length = 2  # (observation, action) pairs in per-step prompts
    c.prompt.max_prompt_tokens = 1024  # student prompt budget
    c.prompt.max_guidance_tokens = 384  # skill / privileged block budget (never overflows)

    c.rows = ml_collections.ConfigDict()
    c.rows.layout = "per_step"  # per_step | trajectory (must match rollout.layout for trajectory)
    c.rows.length_quantum = 64  # pad row length to a power of two >= this
    c.rows.max_length = 0  # 0: no cap; else rows are cut to this many tokens

    c.advantage = ml_collections.ConfigDict()  # episode returns -> advantages (train/returns.py)
    c.advantage.mode = "group"  # group (GRPO) | batch | group_then_batch (all-fail groups still get signal)
    c.advantage.norm_std = True  # False is Dr.GRPO
    c.advantage.batch_weight = 0.5  # group_then_batch: weight of the group-vs-batch term
    c.advantage.truncation_penalty = 1.0  # truncated episode with no finished failure in its group loses this
    c.advantage.step_weight = 0.0  # > 0: + this x a step-level term over turns with the same observation
    c.advantage.gamma = 0.95  # discount of that term's return-to-go

    c.rollout_correction = ml_collections.ConfigDict()  # sampler/trainer mismatch (needs recompute_old_logp)
    c.rollout_correction.mode = "none"  # none | tis (truncated IS per token) | mis (masked IS per row)
    c.rollout_correction.threshold = 2.0  # tis: truncation; mis: rows outside [1/t, t] are dropped

    c.loss = ml_collections.ConfigDict()
    c.loss.grpo_coef = 1.0
    c.loss.eps_low = 0.2
    c.loss.eps_high = 0.2
    c.loss.dual_clip = None  # e.g. 3.0
    c.loss.sdl_coef = 1e-3  # lambda (paper default; 1e-2 over-regularizes, 5e-4 too weak)
    c.loss.sdl_kind = "sampled"  # sampled | full_vocab | topk
    c.loss.sdl_topk = 32
    c.loss.is_clip = None  # truncate the SDL importance weight at this value
    c.loss.kl_coef = 0.0  # KL to the initial policy (off by default)
    c.loss.kl_kind = "k3"  # k1 | k2 | k3 | k3+
    c.loss.entropy_coef = 0.0
    # Entropy of the policy over the environment's choice words only, at the token after `choice_after`
    # (an environment config names its words, e.g. Sokoban's four moves); 0: off.
    c.loss.choice_entropy_coef = 0.0
    c.loss.choice_after = "<action>"
    c.loss.choice_words = ()
    c.loss.agg = "token-mean"  # token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm
    c.loss.norm_length = None  # seq-mean-token-sum-norm constant
    c.loss.logprob_chunk = 0  # sequence chunk of the chunked log-softmax (0: automatic by size)

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 1e-6
    c.optimizer.schedule = "constant"  # constant | cosine
    c.optimizer.warmup_steps = 0
    c.optimizer.total_steps = 400
    c.optimizer.final_lr_ratio = 0.1
    c.optimizer.weight_decay = 0.01
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.max_grad_norm = 1.0

    c.teacher_sync = ml_collections.ConfigDict(dict(mode="hard", every=1, tau=0.01))  # paper: hard copy, K=1

    c.warmstart = ml_collections.ConfigDict()  # supervised warm-up on expert demonstrations before RL
    c.warmstart.steps = 0  # 0: off
    c.warmstart.num_tasks = 64  # demonstration tasks (train seeds first_seed..first_seed+n-1)
    c.warmstart.first_seed = 0  # put it past env.num_train_tasks to keep RL levels unseen by the warm-up
    c.warmstart.rows_per_step = 16
    c.warmstart.learning_rate = 1e-3
    c.warmstart.warmup_steps = 10
    c.warmstart.length_buckets = 3  # rows grouped by length; a step is as wide as its group (one compile each)
    c.warmstart.answer_template = "<think>Next: {action}.</think><action>{action}</action>"
    # Demonstrations carrying a skill block in the teacher's format (train/skill_demos.py), so that a
    # model trained from scratch learns to read skills: workflow it follows / advice only / another level's.
    c.warmstart.skill_match = 0.0
    c.warmstart.skill_advice = 0.0
    c.warmstart.skill_other = 0.0

    c.skills = ml_collections.ConfigDict()
    c.skills.backend = "rule"  # rule (faithful) | oracle (privileged: solver plans, gold answers) | openai | policy
    c.skills.granularity = "group"  # group: one skill per task group | episode: one skill per episode
    c.skills.max_untried_per_task = 1  # no new skill for a task while this many wait for a first credit (0: off)
    c.skills.capacity_per_task = 8
    c.skills.ucb_c = 1.0  # exploration bonus on the credit scale below ([0, 1])
    c.skills.credit = "won_rate_next_visit"  # won_rate_next_visit (success, [0, 1]) | next_visit (return) | same_step
    c.skills.workers = 2  # background summarizer threads
    c.skills.max_queue = 64  # back-pressure: submissions beyond this are dropped (counted)
    c.skills.drain_timeout_s = 60.0  # wait for pending summaries before a checkpoint
    c.skills.policy_max_new_tokens = 512
    # Any OpenAI-compatible endpoint; timeout and retries are the official SDK's (per request, per attempt).
    c.skills.openai = ml_collections.ConfigDict(dict(base_url="", model="", api_key_env="OPENAI_API_KEY", timeout_s=60.0,
                                                     max_retries=3))

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 25  # iterations between evaluations (0: never during training)
    c.eval.at_start = True  # evaluate once before the first RL iteration (after the warm-up)
    c.eval.at_end = True
    c.eval.num_tasks = 64  # test-split tasks, one greedy episode each
    c.eval.temperature = 0.0  # 0: greedy; > 0: sampled, the distribution RL trains
    c.eval.greedy_too = False  # with a sampled evaluation, also play the greedy policy (eval_greedy/*)
    # > 0: also play a policy that reads no observation (answers drawn uniformly from the environment's
    # `blind_answers`) this many episodes on each evaluation task, once a run: eval/blind_success_rate,
    # the level a trained policy must clear before its success means it acts on what it sees.
    c.eval.blind_repeats = 0

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 25  # iterations between checkpoints (0: never)
    c.checkpoint.keep = 3
    c.checkpoint.resume = True  # resume from the workdir's latest checkpoint

    c.metrics = ml_collections.ConfigDict()  # metrics.jsonl and curves.png are always written
    c.metrics.tensorboard = True  # event files in <workdir>/tensorboard (`tensorboard --logdir <workdir>`)
    c.metrics.wandb = False  # also log to Weights & Biases (needs `pip install wandb`)
    c.metrics.wandb_project = "skillsd_jax"  # W&B project name
    c.metrics.wandb_entity = ""  # W&B user or team; "" = your default entity
    c.metrics.wandb_mode = "online"  # online | offline (upload later with `wandb sync`) | disabled
    c.metrics.wandb_run_name = ""  # "" = the workdir's folder name
    return c


def apply_smoke(c: ml_collections.ConfigDict) -> None:
    """Shrinks a config to a run that finishes in a few minutes on a laptop CPU."""
    c.num_iterations = 4
    c.rollout.tasks_per_iteration = 2
    c.rollout.group_size = 4
    c.rollout.max_turns = 4
    c.rollout.max_response_tokens = 16
    c.prompt.history_length = 1
    c.prompt.max_prompt_tokens = 512
    c.prompt.max_guidance_tokens = 128
    c.env.num_train_tasks = 4
    c.warmstart.steps = min(c.warmstart.steps, 5)
    c.warmstart.num_tasks = 4
    c.warmstart.rows_per_step = 4
    c.eval.every = 2
    c.eval.num_tasks = 4
    c.checkpoint.every = 2
    c.optimizer.learning_rate = 1e-4

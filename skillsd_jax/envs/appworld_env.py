"""AppWorld adapter: the model writes python in `<code>...</code>`, AppWorld runs it against its
simulated apps, and the task is scored by AppWorld's own evaluator.

The `appworld` package (pip `appworld==0.1.3`) is imported lazily, only when an environment is
built, so importing `skillsd_jax.envs` never needs it. It pins pydantic 1.x, which is why it is
an optional extra: `pip install 'skillsd_jax[appworld]'`, best in its own virtual environment.
Its task data is a separate download: `appworld install` then `appworld download data`, in the
folder named by `APPWORLD_ROOT` (AppWorld's default: the current directory).

An episode: `reset(seed)` opens task `task_ids[seed % len(task_ids)]` (ids from AppWorld's
`load_task_ids(split)`); each valid reply's code runs through `AppWorld.execute` and its output
(truncated) is the next observation. The episode ends when the code calls
`apis.supervisor.complete_task(...)` (AppWorld then reports the task completed) or after
`max_turns` replies; the final reward is task success (1/0) or, with `reward="completion"`,
the fraction of AppWorld's tests that pass. AppWorld keeps per-process global state (frozen
time, database caches): run parallel AppWorld environments in separate processes.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from skillsd_jax.envs.base import Info, TurnCountingEnv, register
from skillsd_jax.envs.parsing import extract_tag

INSTALL_HINT = (
    "install it with `pip install 'skillsd_jax[appworld]'` (appworld==0.1.3). Note: appworld pins "
    "pydantic 1.x, so install it in a separate virtual environment if other packages need pydantic 2"
)
DATA_HINT = (
    "run `appworld install` and then `appworld download data` in the folder that should hold the data, "
    "and point the APPWORLD_ROOT environment variable (or root=...) at that folder"
)
_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_+-]*\s*\n(.*?)\n?\s*```\s*$", re.DOTALL)


class AppWorldUnavailable(RuntimeError):
    """The appworld package, its installed apps, or its task data are missing."""


def import_appworld() -> ModuleType:
    """Imports appworld or raises AppWorldUnavailable saying how to install it."""
    try:
        return importlib.import_module("appworld")
    except ImportError as e:
        msg = f"The AppWorld environment needs the `appworld` package: {INSTALL_HINT}. ({e})"
        raise AppWorldUnavailable(msg) from e


def resolve_root(root: str | os.PathLike[str] | None) -> str:
    """The AppWorld root folder: `root`, else $APPWORLD_ROOT, else the current directory (AppWorld's rule)."""
    if root is not None:
        return os.path.abspath(os.fspath(root))
    return os.path.abspath(os.environ.get("APPWORLD_ROOT") or os.getcwd())


def check_data(root: str) -> None:
    """Raises AppWorldUnavailable unless `root/data` holds AppWorld's tasks and dataset lists."""
    missing = [d for d in ("tasks", "datasets") if not os.path.isdir(os.path.join(root, "data", d))]
    if missing:
        where = ", ".join(os.path.join(root, "data", d) for d in missing)
        raise AppWorldUnavailable(f"AppWorld task data not found (missing {where}); {DATA_HINT}.")


def check_apps_installed() -> None:
    """`appworld install` unpacks the app code into the package; without it nothing can run."""
    try:
        spec = importlib.util.find_spec("appworld.apps.supervisor")
    except (ImportError, ValueError):  # a broken or stub `appworld` without the apps package
        spec = None
    if spec is None:
        raise AppWorldUnavailable(f"AppWorld's apps are not unpacked; {DATA_HINT}.")


def extract_code(response_text: str) -> str | None:
    """The code in the last `<code>...</code>` (a markdown fence inside it is removed); None if absent/empty."""
    code = extract_tag(response_text, "code")
    if code is None:
        return None
    fenced = _FENCE.match(code)
    if fenced:
        code = fenced.group(1)
    return code.strip() or None


def truncate_output(text: str, max_chars: int) -> str:
    """Keeps the head and tail of a long output (tracebacks end with the useful line)."""
    text = str(text)
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    head = max_chars * 2 // 3
    tail = max_chars - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n... [{cut} characters truncated] ...\n{text[-tail:]}"


def score_evaluation(evaluation: Mapping[str, Any]) -> tuple[bool, float]:
    """(success, completion rate) from AppWorld's `TestTracker.to_dict()`.

    Completion rate = passed tests / `num_tests` (falls back to passes + failures).
    """
    success = bool(evaluation.get("success", False))
    passes = evaluation.get("passes") or []
    failures = evaluation.get("failures") or []
    num_tests = evaluation.get("num_tests")
    if not isinstance(num_tests, int) or num_tests <= 0:
        num_tests = len(passes) + len(failures)
    completion = len(passes) / num_tests if num_tests > 0 else float(success)
    return success, float(min(1.0, completion))


def task_prompt(instruction: str, supervisor: Any) -> str:
    """The task as AppWorld's agents see it: who the supervisor is, then the instruction."""

    def field(name: str) -> str:
        value = supervisor.get(name) if isinstance(supervisor, Mapping) else getattr(supervisor, name, None)
        return "" if value is None else str(value)

    name = f"{field('first_name')} {field('last_name')}".strip()
    who = f"I am your supervisor, {name}." if name else "I am your supervisor."
    contact = ", ".join(x for x in (field("email"), field("phone_number")) if x)
    if contact:
        who += f" My email and phone number: {contact}."
    return f"{who}\nTask: {instruction}"


def privileged_info(ground_truth: Any, max_chars: int = 4000) -> str:
    """Teacher-only hints from AppWorld's ground truth: required apps, expected answer, solution code."""
    if ground_truth is None:
        return ""
    parts = []
    apps = getattr(ground_truth, "required_apps", None)
    if apps:
        parts.append(f"Apps needed: {', '.join(map(str, apps))}.")
    answer = getattr(ground_truth, "answer", None)
    if answer is not None:
        parts.append(f"Expected answer: {answer}.")
    solution = getattr(ground_truth, "solution_code", "") or getattr(ground_truth, "compiled_solution_code", "")
    if solution:
        parts.append("Reference solution:\n" + truncate_output(solution, max_chars))
    return "\n".join(parts)


_INSTRUCTIONS = """\
You act for your supervisor inside AppWorld, a simulated phone with everyday apps (for example \
spotify, gmail, venmo, amazon, phone, file_system, simple_note, splitwise, todoist). Reason inside \
<think> and </think>, then give python code inside <code> and </code>. The code runs in a persistent \
python session (variables stay defined between replies) and you see what it prints.
Use the apps only through the `apis` object: `apis.<app_name>.<api_name>(**arguments)`. \
Look up what exists before calling it:
  print(apis.api_docs.show_app_descriptions())
  print(apis.api_docs.show_api_descriptions(app_name='spotify'))
  print(apis.api_docs.show_api_doc(app_name='spotify', api_name='login'))
Most apps need an access token: get the supervisor's passwords with `apis.supervisor.show_account_passwords()`, \
log in with `apis.<app>.login(username=..., password=...)` and pass `access_token=...` to later calls. \
Personal details come from `apis.supervisor.show_profile()`. List APIs are paginated: keep increasing \
`page_index` until a page comes back empty. Never guess a value you can look up; take small steps and print results.
When the task is done call `apis.supervisor.complete_task()`; if the task asks a question, give the answer \
as `apis.supervisor.complete_task(answer=...)`. That ends the episode; so does running out of replies ({max_turns})."""


class AppWorldEnv(TurnCountingEnv):
    """Multi-turn coding agent over AppWorld tasks, rewarded by AppWorld's evaluator."""

    name = "appworld"
    max_turns = 40
    action_tag = "code"

    def __init__(
        self,
        split: str = "train",
        *,
        task_ids: list[str] | None = None,
        root: str | os.PathLike[str] | None = None,
        experiment_name: str = "skillsd_jax",
        max_turns: int = 40,
        reward: str = "success",
        max_output_chars: int = 4000,
        invalid_action_penalty: float = 0.1,
        world_kwargs: dict[str, Any] | None = None,
        world_factory: Callable[..., Any] | None = None,
    ):
        """`world_factory(task_id=..., experiment_name=..., **world_kwargs)` builds a world; default
        `appworld.AppWorld` (which needs the package and data). Task ids: `task_ids`, else
        `appworld.load_task_ids(split)` (splits: train, dev, test_normal, test_challenge)."""
        super().__init__(invalid_action_penalty)
        if reward not in ("success", "completion"):
            raise ValueError(f"appworld: reward must be 'success' or 'completion', got {reward!r}")
        if int(max_turns) < 1:
            raise ValueError(f"appworld: max_turns must be >= 1, got {max_turns}")
        self.split = split
        self.experiment_name = experiment_name
        self.max_turns = int(max_turns)
        self.reward_mode = reward
        self.max_output_chars = int(max_output_chars)
        self.world_kwargs = dict(world_kwargs or {})
        if world_factory is None:
            appworld = import_appworld()
            self.root = resolve_root(root)
            check_data(self.root)
            check_apps_installed()
            appworld.update_root(self.root)
            world_factory = appworld.AppWorld
            if task_ids is None:
                task_ids = list(appworld.load_task_ids(split))
        self._factory = world_factory
        if not task_ids:
            raise ValueError(f"appworld: no task ids (split {split!r}); pass task_ids=[...]")
        self.task_ids = list(task_ids)
        self._world: Any = None
        self._task_id = ""
        self._instruction = ""
        self._turn = 0
        self._done = False

    def instructions(self) -> str:
        return _INSTRUCTIONS.format(max_turns=self.max_turns)

    def reset(self, seed: int) -> tuple[str, Info]:
        self.close()
        self._task_id = self.task_ids[int(seed) % len(self.task_ids)]
        self._world = self._factory(task_id=self._task_id, experiment_name=self.experiment_name, **self.world_kwargs)
        task = self._world.task
        self._instruction = str(task.instruction)
        self._turn = 0
        self._done = False
        info = self._info(action_valid=True)
        info["privileged"] = privileged_info(getattr(task, "ground_truth", None))
        return task_prompt(self._instruction, task.supervisor), info

    def _info(self, *, action_valid: bool, won: bool = False, **extra: Any) -> Info:
        return {
            "won": won,
            "action_valid": action_valid,
            "task_id": f"appworld/{self._task_id}",
            "task": self._instruction,
            "turn": self._turn,
            **extra,
        }

    def _finish(self) -> tuple[float, Info]:
        """Scores the world with AppWorld's evaluator."""
        self._done = True
        evaluation = self._world.evaluate().to_dict()
        success, completion = score_evaluation(evaluation)
        reward = float(success) if self.reward_mode == "success" else completion
        return reward, {"won": success, "success": success, "completion": completion,
                        "num_tests": evaluation.get("num_tests")}

    def _started(self) -> bool:
        return self._world is not None

    def _take_turn(self, response_text: str) -> tuple[str, float, bool, Info]:
        code = extract_code(response_text)
        if code is None:
            obs = "Invalid reply: put the python code to run between <code> and </code>."
            reward, info = -self.invalid_action_penalty, self._info(action_valid=False, action=None)
        else:
            obs = truncate_output(self._world.execute(code), self.max_output_chars)
            reward, info = 0.0, self._info(action_valid=True, action=code)
            completed = bool(self._world.task_completed())
            info["task_completed"] = completed
            if completed:
                final, scores = self._finish()
                return obs, reward + final, True, {**info, **scores}
        if self._turn >= self.max_turns:
            final, scores = self._finish()
            return obs, reward + final, True, {**info, **scores}
        return obs, reward, False, info

    def close(self) -> None:
        if self._world is not None:
            world, self._world = self._world, None
            world.close()


register("appworld", AppWorldEnv)

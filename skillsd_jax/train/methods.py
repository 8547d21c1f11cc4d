"""The method table: Skill-SD and its baselines as data, all on one code path (docs/algorithm.md).

Each method says what guidance the acting prompt, the student's training prompt and the teacher's
prompt carry, which loss terms are on, and how the teacher follows the student.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    act_guidance: str  # guidance in the prompt that generates rollouts: "" | "skill"
    act_with_teacher: bool  # rollouts sampled with the teacher's parameters (off-policy ablation)
    student_guidance: str  # guidance in the training rows' prompt: "" | "skill" (never privileged)
    teacher_guidance: str  # guidance in the teacher prompt: "" (no teacher) | "skill" | "privileged"
    grpo: bool  # GRPO term on
    sdl: bool  # SDL term on
    teacher_sync: str | None = None  # override of teacher_sync.mode ("frozen"), None keeps the config's

    @property
    def uses_skills(self) -> bool:
        return "skill" in (self.act_guidance, self.student_guidance, self.teacher_guidance)


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("grpo", "", False, "", "", grpo=True, sdl=False),
    Method("opd", "", False, "", "privileged", grpo=False, sdl=True),
    Method("opsd_grpo", "", False, "", "privileged", grpo=True, sdl=True),
    Method("skill_grpo", "skill", False, "skill", "", grpo=True, sdl=False),
    Method("skill_sd", "", False, "", "skill", grpo=True, sdl=True),
    Method("skill_sd_frozen", "", False, "", "skill", grpo=True, sdl=True, teacher_sync="frozen"),
    Method("skill_sd_offpolicy", "skill", True, "", "skill", grpo=True, sdl=True),
]}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"config.method={name!r} is unknown; choose one of {sorted(METHODS)}")
    return METHODS[name]

"""Rule-based analysis for environments without a dedicated analyzer (Search-QA, TextWorld, ALFWorld,
AppWorld, WebShop): outcome, invalid actions, the most repeated failing action, the shortest
winning action sequence as the workflow, and for Search-QA the final answers against the gold ones.

`reveal_answers` lets the Search-QA mistake analysis quote the gold answer. That is privileged
information (the OPD teacher's), so it is off by default and only the `oracle` backend turns it on.
"""

from __future__ import annotations

import re
import string
from typing import Sequence

from skillsd_jax.agent.episode import Episode, Turn
from skillsd_jax.envs.parsing import first_tag
from skillsd_jax.skills.analyzers.common import (Analysis, attempted_action, invalid_summary, is_invalid,
                                                 most_repeated_failure, numbered, shortest_win)


class GenericAnalyzer:
    """Works from the Episode record alone (no environment replay)."""

    def __init__(self, *, reveal_answers: bool = False, max_listed: int = 3):
        self.reveal_answers = reveal_answers
        self.max_listed = max_listed

    def analyze(self, episodes: Sequence[Episode]) -> Analysis:
        if not episodes:
            raise ValueError("GenericAnalyzer.analyze needs at least one episode")
        n = len(episodes)
        best = shortest_win(episodes)
        n_won = sum(e.won for e in episodes)
        mean_ret = sum(e.total_reward for e in episodes) / n
        meta: dict[str, object] = {"analyzer": "generic", "num_episodes": n, "num_won": n_won}

        if best is not None:
            steps = self._steps(best)
            success = (f"{n_won}/{n} attempts succeeded (mean return {mean_ret:.2f}). The shortest success "
                       f"took {len(steps)} actions: {'; '.join(steps)}.")
            workflow = numbered(steps)
        else:
            top = max(episodes, key=lambda e: e.total_reward)
            success = (f"No attempt succeeded ({n} tries, mean return {mean_ret:.2f}, best {top.total_reward:.2f}).")
            progress = self._progress_prefix(top)
            if progress:
                success += f" The best attempt earned reward with: {'; '.join(progress)}."
                workflow = numbered(progress + ["then try actions the failed attempts did not try"])
            else:
                workflow = numbered(["read the task and the available actions carefully",
                                     "choose an action none of the failed attempts repeated",
                                     "check the observation after every action and change plan if nothing changed"])

        mistakes: list[str] = []
        n_invalid, n_eps_invalid = invalid_summary(episodes)
        meta["invalid_actions"] = n_invalid
        if n_invalid:
            mistakes.append(f"{n_invalid} invalid actions in {n_eps_invalid}/{n} attempts (answers without a "
                            "well-formed action tag, or actions the environment does not accept).")
        rep = most_repeated_failure(episodes)
        if rep is not None:
            mistakes.append(f"Most repeated failing action: '{rep[0]}' ({rep[1]} times) - do not loop on it.")
            meta["most_repeated_failure"] = rep[0]
        mistakes += self._answer_mistakes(episodes)
        if not mistakes:
            mistakes.append("No invalid actions, loops or wrong answers were observed.")
        return Analysis(success, "\n".join(mistakes), workflow, meta)

    @staticmethod
    def _steps(ep: Episode) -> list[str]:
        return [_describe(t, _is_qa(ep)) for t in ep.turns if not is_invalid(t)]

    @staticmethod
    def _progress_prefix(ep: Episode) -> list[str]:
        """Valid actions of `ep` up to its last positive-reward turn."""
        last = max((i for i, t in enumerate(ep.turns) if t.reward > 0 and not is_invalid(t)), default=-1)
        return [_describe(t, _is_qa(ep)) for t in ep.turns[: last + 1] if not is_invalid(t)]

    def _answer_mistakes(self, episodes: Sequence[Episode]) -> list[str]:
        """Search-QA style: wrong final answers compared with `initial_info["answers"]`."""
        gold = episodes[0].initial_info.get("answers")
        if not gold:
            return []
        gold = [str(g) for g in (gold if isinstance(gold, (list, tuple)) else [gold])]
        gold_norm = {normalize_answer(g) for g in gold}
        wrong: dict[str, list] = {}  # normalized answer -> [first spelling seen, count]
        no_answer = 0
        for e in episodes:
            ans = final_answer(e)
            if ans is None:
                no_answer += 1
            elif normalize_answer(ans) not in gold_norm:
                wrong.setdefault(normalize_answer(ans), [ans, 0])[1] += 1
        out = []
        if wrong:
            top = sorted(wrong.values(), key=lambda v: -v[1])[: self.max_listed]  # stable: first seen wins ties
            listed = ", ".join(f"'{a}'" + (f" ({k}x)" if k > 1 else "") for a, k in top)
            line = f"Wrong final answers: {listed}"
            line += f"; the expected answer is '{gold[0]}'." if self.reveal_answers else "."
            out.append(line)
        if no_answer:
            out.append(f"{no_answer}/{len(episodes)} attempts never gave an <answer> before running out of turns.")
        return out


def _describe(t: Turn, qa: bool) -> str:
    """A step as text; Search-QA turns say whether they searched or answered."""
    if qa:
        tagged = first_tag(t.response_text or "", ("search", "answer"))
        if tagged is not None and tagged[1]:
            return f"{tagged[0]} '{tagged[1]}'"
    return attempted_action(t)


def _is_qa(ep: Episode) -> bool:
    return "answers" in ep.initial_info or ep.env_name.startswith("search")


def final_answer(ep: Episode) -> str | None:
    """The content of the last <answer> tag the episode gave, if any."""
    for t in reversed(ep.turns):
        tagged = first_tag(t.response_text or "", ("search", "answer"))
        if tagged is not None and tagged[0] == "answer":
            return tagged[1]
    return None


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD-style normalization: lower case, no punctuation or articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", s.lower().translate(_PUNCT)).split())

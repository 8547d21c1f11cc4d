"""Search-QA environment in the style of Search-R1: search a corpus, then answer.

Each turn the model writes either `<search>query</search>` (the next observation is the top-k
passages inside `<information>...</information>`) or `<answer>...</answer>` (ends the episode).
Reward = exact match of the SQuAD-normalized answer against any gold answer; `info["f1"]` and
`info["em"]` report token F1 and EM. A reply with neither tag, or an empty query, is an invalid
action: no retrieval, reward `-invalid_action_penalty`. Reaching `max_turns` without an answer
ends the episode with reward 0 (minus the penalty if that last reply was invalid).

`reset(seed)` poses question `seed % len(questions)` of the configured split, so seeds
0..len-1 enumerate the split once.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import threading
from typing import Any

from skillsd_jax.envs.base import Info, TurnCountingEnv, register
from skillsd_jax.envs.parsing import first_tag
from skillsd_jax.envs.search_qa.retrievers import (BM25Retriever, HttpRetriever, Retriever, format_passages,
                                                   read_jsonl)
from skillsd_jax.envs.search_qa.scoring import exact_match, f1_score

ASSET_DIR = pathlib.Path(__file__).resolve().parents[2] / "assets" / "search_qa"
DEFAULT_DATASET = "calvessa"
DEFAULT_CORPUS = ASSET_DIR / "corpus.jsonl"


@dataclasses.dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: tuple[str, ...]
    supporting_titles: tuple[str, ...] = ()


def load_questions(path: str | os.PathLike[str]) -> list[Question]:
    """Reads NQ/HotpotQA-style JSONL (`id`, `question`, `golden_answers`; `answer(s)` also accepted)."""
    questions: list[Question] = []
    for where, row in read_jsonl(path):
        if not isinstance(row, dict) or not str(row.get("question", "")).strip():
            raise ValueError(f"{where}: needs a non-empty 'question' field")
        answers = row.get("golden_answers", row.get("answers", row.get("answer")))
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(answers, list) or not answers:
            raise ValueError(f"{where}: needs 'golden_answers' (a non-empty list of strings)")
        titles = row.get("supporting_titles") or ()
        questions.append(
            Question(
                id=str(row.get("id", len(questions))),
                question=str(row["question"]).strip(),
                answers=tuple(str(a) for a in answers),
                supporting_titles=tuple(str(t) for t in titles),
            )
        )
    if not questions:
        raise ValueError(f"question file {path} holds no questions")
    return questions


# Envs are built many times (G per task, one per worker): share the parsed data and indexes.
_CACHE_LOCK = threading.Lock()
_QUESTIONS: dict[str, list[Question]] = {}
_BM25: dict[tuple[str, str | None], BM25Retriever] = {}


def _cached_questions(path: str) -> list[Question]:
    with _CACHE_LOCK:
        if path not in _QUESTIONS:
            _QUESTIONS[path] = load_questions(path)
        return _QUESTIONS[path]


def shared_bm25(corpus_path: str | os.PathLike[str], index_dir: str | os.PathLike[str] | None = None) -> BM25Retriever:
    """One BM25Retriever per (corpus, index_dir) in this process."""
    corpus = os.path.abspath(os.fspath(corpus_path))
    key = (corpus, None if index_dir is None else os.path.abspath(os.fspath(index_dir)))
    with _CACHE_LOCK:
        if key not in _BM25:
            _BM25[key] = BM25Retriever(key[0], key[1])
        return _BM25[key]


class SearchQAEnv(TurnCountingEnv):
    """Multi-turn search-then-answer QA over a local BM25 index or a retrieval server."""

    name = "search_qa"
    max_turns = 4
    action_tag = "answer"

    def __init__(
        self,
        split: str = "train",
        *,
        questions_path: str | os.PathLike[str] | None = None,
        dataset: str | None = None,
        corpus_path: str | os.PathLike[str] | None = None,
        index_dir: str | os.PathLike[str] | None = None,
        retriever: Retriever | None = None,
        retriever_url: str | None = None,
        topk: int = 3,
        max_turns: int = 4,
        invalid_action_penalty: float = 0.1,
        max_query_chars: int = 500,
        http_timeout: float = 10.0,
        http_retries: int = 3,
    ):
        """Questions: `questions_path`, else the shipped `{split}.jsonl` ("train"/"test").

        Retrieval: `retriever` if given, else an HttpRetriever for `retriever_url`, else BM25 over
        `corpus_path` (default: the shipped corpus), cached in `index_dir` when given.
        `dataset` names the task ids (`search_qa/<dataset>/<id>`); default "calvessa" for the
        shipped set, else the question file's folder name.
        """
        super().__init__(invalid_action_penalty)
        if int(max_turns) < 1 or int(topk) < 1:
            raise ValueError(f"search_qa: max_turns ({max_turns}) and topk ({topk}) must be >= 1")
        if questions_path is None:
            path = ASSET_DIR / f"{split}.jsonl"
            if not path.is_file():
                raise ValueError(f"search_qa: unknown split {split!r} for the shipped set; use 'train' or 'test'")
            dataset = dataset or DEFAULT_DATASET
        else:
            path = pathlib.Path(questions_path)
            if not path.is_file():
                raise FileNotFoundError(f"search_qa: questions_path not found: {path}")
            dataset = dataset or path.resolve().parent.name or "custom"
        self.split = split
        self.dataset = dataset
        self.questions = _cached_questions(str(path.resolve()))
        if retriever is not None:
            self.retriever: Retriever = retriever
        elif retriever_url:
            self.retriever = HttpRetriever(retriever_url, topk=topk, timeout=http_timeout, retries=http_retries)
        else:
            self.retriever = shared_bm25(corpus_path or DEFAULT_CORPUS, index_dir)
        self.topk = int(topk)
        self.max_turns = int(max_turns)
        self.max_query_chars = int(max_query_chars)
        self._q: Question | None = None
        self._turn = 0
        self._done = False

    def instructions(self) -> str:
        searches = self.max_turns - 1
        return (
            "Answer the question using a search engine over a knowledge base. "
            "Reason inside <think> and </think> first. To search, write <search>your query</search>; "
            "the best matching passages come back between <information> and </information>. "
            "When you know the answer, write it as a short phrase inside <answer> and </answer>, "
            "for example <answer>Port Aldine</answer>, without explanation. "
            f"You have {self.max_turns} replies in total, so at most {searches} searches before you must answer. "
            "Only the first <search> or <answer> in a reply is used; a reply with neither is wasted."
        )

    def reset(self, seed: int) -> tuple[str, Info]:
        self._q = self.questions[int(seed) % len(self.questions)]
        self._turn = 0
        self._done = False
        info = self._info(action_valid=True)
        info["privileged"] = self._privileged()
        return f"Question: {self._q.question}", info

    def _task_id(self) -> str:
        assert self._q is not None
        return f"search_qa/{self.dataset}/{self._q.id}"

    def _privileged(self) -> str:
        assert self._q is not None
        text = f"Gold answer: {self._q.answers[0]}"
        if len(self._q.answers) > 1:
            text += f" (also accepted: {'; '.join(self._q.answers[1:])})"
        if self._q.supporting_titles:
            text += f". Supporting passage(s): {'; '.join(self._q.supporting_titles)}"
        return text

    def _info(self, *, action_valid: bool, won: bool = False, **extra: Any) -> Info:
        assert self._q is not None
        return {
            "won": won,
            "action_valid": action_valid,
            "task_id": self._task_id(),
            "task": self._q.question,
            "answers": list(self._q.answers),
            "turn": self._turn,
            **extra,
        }

    def _started(self) -> bool:
        return self._q is not None

    def _take_turn(self, response_text: str) -> tuple[str, float, bool, Info]:
        last_turn = self._turn >= self.max_turns
        parsed = first_tag(response_text, ("search", "answer"))
        if parsed is None or (parsed[0] == "search" and not parsed[1]):
            self._done = last_turn
            obs = (
                "Invalid reply: write <search>query</search> to search or <answer>answer</answer> to answer."
                + (" No turns left; the episode is over." if last_turn else "")
            )
            return obs, -self.invalid_action_penalty, self._done, self._info(action_valid=False, action=None)

        tag, content = parsed
        if tag == "answer":
            self._done = True
            em = exact_match(content, self._q.answers)
            f1 = f1_score(content, self._q.answers)
            info = self._info(action_valid=True, won=em == 1.0, action=f"answer[{content}]", em=em, f1=f1)
            return f"Your answer: {content}", em, True, info

        query = " ".join(content.split())[: self.max_query_chars]
        if last_turn:
            # No retrieval on the final reply: its results could never be used.
            self._done = True
            info = self._info(action_valid=True, action=f"search[{query}]", em=0.0, f1=0.0)
            return "No turns left to use search results; the episode ends without an answer.", 0.0, True, info
        passages = self.retriever.search([query], self.topk)[0][: self.topk]
        obs = f"<information>{format_passages(passages)}</information>"
        info = self._info(action_valid=True, action=f"search[{query}]", retrieved=[p.id for p in passages])
        return obs, 0.0, False, info


register("search_qa", SearchQAEnv)

"""WebShop adapter: drives a running WebShop web server (princeton-nlp/WebShop's Flask app,
`web_agent_site.app`, default http://localhost:3000) over HTTP, like a text browser.

Actions (inside `<action>...</action>`) follow WebShop's text environment: `search[query]` on a
page with a search bar, `click[name]` on a clickable of the current page. Clickables are found
the way `WebAgentTextEnv` finds them: buttons with class `btn` (their form's action is posted),
`a.product-link` links (the product ASIN, lower-cased) and radio inputs for product options
(their `data-url` is opened); "search" itself is not clickable. The observation is WebShop's
"simple" text mode: the page's visible text nodes joined with " [SEP] " (unlike WebShop, elements
hidden with `display:none` / `hidden`, e.g. the goal details on the purchase page, are left out;
`info["admissible_actions"]` lists the valid actions). `click[buy now]` ends
the episode; its page shows the server's score in 0..1 (`info["score"]`, reward = score x
`reward_scale`); success (`won`) means score == 1. The episode also ends after `max_turns`.

Goals: `reset(seed)` opens session "<random>fixed_<goal>", which the server maps to goal index
`goal` (a fixed, seedable goal). Goal ranges follow WebShop's baselines: test = [0, 500),
dev = [500, 1500), train = [1500, num_goals); goal = start + seed % (end - start).
"""

from __future__ import annotations

import dataclasses
import html.parser
import re
import socket
import urllib.parse
import uuid
from typing import Any

from skillsd_jax.envs import http
from skillsd_jax.envs.base import Info, TurnCountingEnv, register
from skillsd_jax.envs.parsing import extract_tag

START_HINT = (
    "Start a WebShop server first: in a checkout of https://github.com/princeton-nlp/WebShop run "
    "`./setup.sh -d small` (or `-d all`) once, then `python -m web_agent_site.app` (serves port 3000); "
    "or pass url=... for a server that is already running"
)
SPLIT_RANGES = {"test": (0, 500), "dev": (500, 1500), "eval": (500, 1500), "train": (1500, None)}
NUM_HUMAN_GOALS = 12087  # WebShop's crowd-sourced instructions (the "human goals" setting)

_HIDDEN_TAGS = frozenset({"style", "script", "head", "title", "meta", "noscript", "template"})
_VOID_TAGS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})
_ACTION = re.compile(r"^\s*(search|click)\s*\[(.*)\]\s*$", re.DOTALL | re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def clickable_key(text: str) -> str:
    """How clickables are matched: lower-case, single spaces."""
    return " ".join(str(text).lower().split())


def parse_action(response_text: str) -> tuple[str, str] | None:
    """(verb, argument) from `<action>search[..]</action>` / `<action>click[..]</action>`; None if malformed."""
    content = extract_tag(response_text, "action")
    if content is None:
        return None
    m = _ACTION.match(content)
    if m is None:
        return None
    verb, arg = m.group(1).lower(), " ".join(m.group(2).split())
    return (verb, arg) if arg else None


@dataclasses.dataclass(frozen=True)
class Clickable:
    name: str  # matching key (lower-case)
    kind: str  # "button" | "link" | "option"
    url: str
    method: str  # "GET" or "POST"


@dataclasses.dataclass
class Page:
    """What the text browser knows about one page."""

    url: str
    texts: list[str]
    clickables: dict[str, Clickable]
    search_form: tuple[str, str] | None  # (form action URL, query field name) when there is a search bar
    instruction: str
    score: float | None  # set on the page shown after "buy now"

    def observation(self) -> str:
        return " [SEP] ".join(self.texts)

    def admissible_actions(self) -> list[str]:
        actions = ["search[<your query>]"] if self.search_form else []
        return actions + [f"click[{name}]" for name in self.clickables]


class _PageParser(html.parser.HTMLParser):
    """Collects visible text, clickables, the search form, instruction and score of a WebShop page."""

    def __init__(self, url: str):
        super().__init__(convert_charrefs=True)
        self.url = url
        self.stack: list[dict[str, Any]] = []
        self.texts: list[str] = []
        self.clickables: dict[str, Clickable] = {}
        self.search_form: tuple[str, str] | None = None
        self.instruction_parts: list[list[str]] = []
        self.score_parts: list[str] = []
        self.score_pre: list[str] = []
        self.form: tuple[str, str] | None = None  # (action URL, method) of the enclosing form

    def _inside(self, key: str) -> bool:
        return any(frame.get(key) for frame in self.stack)

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attrs = {k: (v or "") for k, v in attrs_list}
        classes = attrs.get("class", "").split()
        style = attrs.get("style", "").replace(" ", "").lower()
        frame: dict[str, Any] = {"tag": tag}
        if tag in _HIDDEN_TAGS or "hidden" in attrs or "display:none" in style:
            frame["hidden"] = True
        if tag == "form":
            action = urllib.parse.urljoin(self.url, attrs.get("action") or self.url)
            self.form = (action, (attrs.get("method") or "get").upper())
            frame["form"] = True
        elif tag == "button" and "btn" in classes and self.form is not None:
            frame["button"], frame["buf"] = self.form, []
        elif tag == "a" and "product-link" in classes:
            frame["link"], frame["buf"] = urllib.parse.urljoin(self.url, attrs.get("href", "")), []
        elif tag == "input":
            self._input(attrs)
        if attrs.get("id") == "instruction-text":
            frame["instruction"] = True
        elif attrs.get("id") == "reward":
            frame["reward"] = True
        elif tag == "h4" and self._inside("instruction"):
            self.instruction_parts.append([])
        elif tag == "pre" and self._inside("reward"):
            frame["reward_pre"] = True
        if tag not in _VOID_TAGS:
            self.stack.append(frame)

    def _input(self, attrs: dict[str, str]) -> None:
        if attrs.get("type", "").lower() == "radio" and attrs.get("value"):
            url = urllib.parse.urljoin(self.url, attrs.get("data-url", ""))
            key = clickable_key(attrs["value"])
            self.clickables[key] = Clickable(key, "option", url, "GET")
        if attrs.get("id") == "search_input" and self.form is not None:
            self.search_form = (self.form[0], attrs.get("name") or "search_query")

    def handle_endtag(self, tag: str) -> None:
        # Tolerate sloppy markup (WebShop's templates close <h4> with </h5>): pop to the match if any.
        if not any(frame["tag"] == tag for frame in self.stack):
            return
        while self.stack:
            frame = self.stack.pop()
            self._close(frame)
            if frame["tag"] == tag:
                break

    def _close(self, frame: dict[str, Any]) -> None:
        if frame.get("form"):
            self.form = None
        text = " ".join(" ".join(frame.get("buf", [])).split())
        if "button" in frame and text:
            key = clickable_key(text)
            action, method = frame["button"]
            self.clickables[key] = Clickable(key, "button", action, method)
        elif "link" in frame and text:
            key = clickable_key(text)
            self.clickables[key] = Clickable(key, "link", frame["link"], "GET")

    def handle_data(self, data: str) -> None:
        for frame in self.stack:
            if "buf" in frame:
                frame["buf"].append(data)
        if self._inside("reward"):
            self.score_parts.append(data)
            if self._inside("reward_pre"):
                self.score_pre.append(data)
        if self._inside("instruction") and self.instruction_parts:
            self.instruction_parts[-1].append(data)
        if data.strip() and not self._inside("hidden"):
            self.texts.append(data.strip())

    def page(self) -> Page:
        while self.stack:  # unclosed tags at the end of the document
            self._close(self.stack.pop())
        self.clickables.pop("search", None)  # WebShop never lets the agent click the search button
        instruction = " ".join(" ".join(self.instruction_parts[0]).split()) if self.instruction_parts else ""
        instruction = re.sub(r"^instruction:\s*", "", instruction, flags=re.IGNORECASE)
        score = None
        if self.score_parts:
            numbers = _NUMBER.findall(" ".join(self.score_pre) or " ".join(self.score_parts))
            if not numbers:
                raise ValueError("the page has a score element but no number in it")
            score = float(numbers[-1])
        return Page(self.url, self.texts, self.clickables, self.search_form, instruction, score)


def parse_page(html_text: str, url: str) -> Page:
    """Parses one WebShop page (relative links are resolved against `url`)."""
    parser = _PageParser(url)
    parser.feed(html_text)
    parser.close()
    return parser.page()


class WebShopClient:
    """Text browser for a WebShop server: opens sessions, searches and clicks."""

    def __init__(self, url: str = "http://localhost:3000", timeout: float = 30.0, retries: int = 2):
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = int(retries)

    def check_reachable(self) -> None:
        """Raises ServerError unless something accepts TCP connections at the server's address."""
        parts = urllib.parse.urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((parts.hostname or "localhost", port), timeout=min(self.timeout, 5.0)):
                return
        except OSError as e:
            raise http.ServerError(f"WebShop server at {self.url} is not reachable ({e}). {START_HINT}.") from e

    def _fetch(self, url: str, method: str = "GET", fields: dict[str, str] | None = None) -> Page:
        kwargs: dict[str, Any] = {
            "timeout": self.timeout, "retries": self.retries, "what": "WebShop server", "hint": START_HINT
        }
        if method == "POST":
            resp = http.post_form(url, fields or {}, **kwargs)
        else:
            resp = http.request(url, **kwargs)
        try:
            return parse_page(resp.text(), resp.url)
        except ValueError as e:
            raise http.ServerError(f"WebShop server page {resp.url} could not be read: {e}") from e

    def open_goal(self, goal_index: int) -> Page:
        """Starts a fresh session fixed to `goal_index` (unique per episode, so parallel episodes never share one)."""
        session = f"{uuid.uuid4().hex[:12]}fixed_{int(goal_index)}"
        return self._fetch(f"{self.url}/{session}")

    def search(self, page: Page, query: str) -> Page:
        if page.search_form is None:
            raise ValueError("this page has no search bar")
        action, field = page.search_form
        return self._fetch(action, "POST", {field: query})

    def click(self, page: Page, name: str) -> Page:
        target = page.clickables[clickable_key(name)]
        return self._fetch(target.url, target.method)


class WebShopEnv(TurnCountingEnv):
    """WebShop shopping tasks over HTTP, reward = the server's purchase score."""

    name = "webshop"
    max_turns = 15
    action_tag = "action"

    def __init__(
        self,
        split: str = "train",
        *,
        url: str = "http://localhost:3000",
        goal_range: tuple[int, int] | None = None,
        num_goals: int = NUM_HUMAN_GOALS,
        max_turns: int = 15,
        invalid_action_penalty: float = 0.1,
        reward_scale: float = 1.0,
        timeout: float = 30.0,
        retries: int = 2,
        check_server: bool = True,
    ):
        super().__init__(invalid_action_penalty)
        if goal_range is None:
            if split not in SPLIT_RANGES:
                known = sorted(SPLIT_RANGES)
                raise ValueError(f"webshop: unknown split {split!r}; use one of {known} or goal_range=(lo, hi)")
            lo, hi = SPLIT_RANGES[split]
            goal_range = (lo, int(num_goals) if hi is None else hi)
        lo, hi = int(goal_range[0]), int(goal_range[1])
        if not 0 <= lo < hi:
            raise ValueError(f"webshop: goal_range must satisfy 0 <= lo < hi, got {goal_range}")
        if int(max_turns) < 1:
            raise ValueError(f"webshop: max_turns must be >= 1, got {max_turns}")
        self.split = split
        self.goal_range = (lo, hi)
        self.max_turns = int(max_turns)
        self.reward_scale = float(reward_scale)
        self.client = WebShopClient(url, timeout=timeout, retries=retries)
        if check_server:
            self.client.check_reachable()
        self._page: Page | None = None
        self._goal = -1
        self._turn = 0
        self._done = False

    def instructions(self) -> str:
        return (
            "You are shopping on WebShop, a web store, to buy the product that best matches the instruction. "
            "Each page is shown as text, with parts separated by [SEP]. Reason inside <think> and </think>, then "
            "give exactly one action inside <action> and </action>: either search[your query] on a page with a search "
            "bar, or click[name] where name is one of the clickable items listed for the page (product ids, "
            "options such as size or colour, and buttons such as 'back to search', 'next >', '< prev', "
            "'description' or 'buy now'). Choose the required options before clicking 'buy now'; buying ends "
            f"the episode and scores how well the product matches. You have {self.max_turns} actions."
        )

    def goal_index(self, seed: int) -> int:
        lo, hi = self.goal_range
        return lo + int(seed) % (hi - lo)

    def reset(self, seed: int) -> tuple[str, Info]:
        self._goal = self.goal_index(seed)
        try:
            self._page = self.client.open_goal(self._goal)
        except http.ServerError as e:
            raise http.ServerError(f"{e} (goal index {self._goal}: is it within the server's goals?)") from e
        self._turn = 0
        self._done = False
        return self._page.observation(), self._info(action_valid=True)

    def _info(self, *, action_valid: bool, won: bool = False, **extra: Any) -> Info:
        assert self._page is not None
        return {
            "won": won,
            "action_valid": action_valid,
            "task_id": f"webshop/{self._goal}",
            "task": self._page.instruction,
            "admissible_actions": self._page.admissible_actions(),
            "turn": self._turn,
            **extra,
        }

    def _invalid(self, why: str) -> tuple[str, float, bool, Info]:
        assert self._page is not None
        self._done = self._turn >= self.max_turns
        obs = f"Invalid action: {why}\n{self._page.observation()}"
        info = self._info(action_valid=False, action=None)
        if self._done:
            info.update(score=0.0, success=False)
        return obs, -self.invalid_action_penalty, self._done, info

    def _started(self) -> bool:
        return self._page is not None

    def _take_turn(self, response_text: str) -> tuple[str, float, bool, Info]:
        parsed = parse_action(response_text)
        if parsed is None:
            return self._invalid("write one action as <action>search[query]</action> or <action>click[name]</action>.")
        verb, arg = parsed
        if verb == "search":
            if self._page.search_form is None:
                return self._invalid("there is no search bar on this page (click 'back to search' first).")
            self._page = self.client.search(self._page, arg)
        else:
            if clickable_key(arg) not in self._page.clickables:
                return self._invalid(f"'{arg}' is not clickable on this page.")
            self._page = self.client.click(self._page, arg)
        action = f"{verb}[{arg}]"
        obs = self._page.observation()
        if self._page.score is not None:
            self._done = True
            score = self._page.score
            won = score >= 1.0 - 1e-6
            info = self._info(action_valid=True, won=won, action=action, score=score, success=won)
            return obs, score * self.reward_scale, True, info
        self._done = self._turn >= self.max_turns
        info = self._info(action_valid=True, action=action)
        if self._done:  # out of turns without buying
            info.update(score=0.0, success=False)
        return obs, 0.0, self._done, info


register("webshop", WebShopEnv)

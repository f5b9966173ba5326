"""Inspect one trajectory: a step-by-step timeline for the terminal (rich) and for HTML
(:mod:`memgym.show_html`).

Per step: the new input (the part of the observation that differs from the previous one, its
tail), the action, the parsed ops and their results, the memory change, the reward terms and the
segment boundary. The memory change is reconstructed by replaying the trajectory in its env: when
the env has a ``bank`` attribute the timeline diffs its entries (id -> text) before and after
the step, otherwise it diffs the observations.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from rich.console import Console
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from memgym.replay import make_env
from memgym.trajectory import Step, Trajectory, env_action

TAIL_CHARS = 600
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with its terminal control characters (C0 but newline and tab, DEL, C1: the
    ESC that starts colour, cursor and window-title sequences among them) written as ``\\xNN``,
    so model or file text shown in a terminal cannot drive it."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


@dataclass
class TimelineStep:
    """One step of a :class:`Timeline`.

    Attributes:
        step: The recorded step.
        new_input: Tail of what the observation added since the previous step.
        memory: Memory changes as ``(sign, id, text)``: ``+`` added, ``-`` removed, ``~``
            changed (text is the new one); from the observation diff, ``id`` is "".
        bank_size: Entries in the bank after the step (None when the env has no bank).
    """

    step: Step
    new_input: str
    memory: list[tuple[str, str, str]] = field(default_factory=list)
    bank_size: int | None = None


@dataclass
class Timeline:
    """A trajectory with its per-step view.

    Attributes:
        trajectory: The trajectory shown.
        steps: One :class:`TimelineStep` per step.
        memory_source: ``"bank"`` (entries of ``env.unwrapped.bank``) or ``"observation"``.
        note: Set when the replay that reconstructs memory diverged from the record.
    """

    trajectory: Trajectory
    steps: list[TimelineStep]
    memory_source: str
    note: str = ""

    @property
    def title(self) -> str:
        """One-line title: trajectory id, env id and policy."""
        t = self.trajectory
        return f"episode {t.id} · {t.env_id} · {t.policy}"


def bank_view(bank: object) -> dict[str, str]:
    """A memory bank as id -> text: ``bank.entries()`` items (``.id`` / ``.text``), a mapping,
    a sequence (index -> item) or, failing those, its ``str`` under id ``"bank"``."""
    entries = getattr(bank, "entries", None)
    if callable(entries):
        return {str(e.id): str(e.text) for e in entries()}
    if isinstance(bank, Mapping):
        return {str(k): str(v) for k, v in bank.items()}
    if isinstance(bank, list | tuple):
        return {str(i): str(v) for i, v in enumerate(bank)}
    return {"bank": str(bank)}


def _bank_diff(before: dict[str, str], after: dict[str, str]) -> list[tuple[str, str, str]]:
    out = [("-", k, v) for k, v in before.items() if k not in after]
    out += [("~" if k in before else "+", k, v) for k, v in after.items()
            if before.get(k) != v]
    return out


def _obs_diff(before: str, after: str) -> list[tuple[str, str, str]]:
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
    return [(line[0], "", line[1:]) for line in lines
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def new_input(previous: str, observation: str, tail: int = TAIL_CHARS) -> str:
    """What ``observation`` adds to ``previous``: the text after their longest common prefix
    (from the start of that line), at most its last ``tail`` characters."""
    common = next((i for i, (a, b) in enumerate(zip(previous, observation, strict=False))
                   if a != b), min(len(previous), len(observation)))
    start = observation.rfind("\n", 0, common) + 1
    text = observation[start:]
    return text if len(text) <= tail else "…" + text[-tail:]


def build_timeline(traj: Trajectory, tail: int = TAIL_CHARS) -> Timeline:
    """Replay ``traj`` in a fresh env and collect the per-step view.

    Raises:
        ConfigError: The trajectory's env id is not registered.
    """
    env = make_env(traj.env_id, traj.config)
    obs, _ = env.reset(seed=traj.seed)
    has_bank = hasattr(env.unwrapped, "bank")
    bank = bank_view(env.unwrapped.bank) if has_bank else {}
    steps, note, previous = [], "", ""
    for k, step in enumerate(traj.steps):
        obs, *_ = env.step(env_action(step.action, step.info))
        recorded = (traj.steps[k + 1].observation if k + 1 < len(traj.steps)
                    else traj.final_observation)
        if obs != recorded and not note:
            note = f"replay diverged after step {k}: memory view may be wrong from there"
        view = TimelineStep(step, new_input(previous, step.observation, tail))
        if has_bank:
            after = bank_view(env.unwrapped.bank)
            view.memory, view.bank_size, bank = _bank_diff(bank, after), len(after), after
        else:
            view.memory = _obs_diff(step.observation, recorded)
        steps.append(view)
        previous = step.observation
    env.close()
    return Timeline(traj, steps, "bank" if has_bank else "observation", note)


def qa_lines(step: Step) -> list[str]:
    """One line per ``info["qa"]`` record of the step: question, prediction, score, reads."""
    return [f"Q: {r.get('question')} → {r.get('prediction')!r} (gold {r.get('gold')!r}, "
            f"score {r.get('score', 0):.3f}, retrieved {r.get('retrieved', [])}, supporting "
            f"{r.get('supporting', [])})" for r in (step.info or {}).get("qa", [])]


def _ops_text(step: Step) -> Text:
    text = Text()
    if step.parse_error:
        text.append(printable(f"parse error at {step.parse_error.get('position')}: "
                              f"{step.parse_error.get('reason')}\n"), style="bold red")
    for result in step.op_results:
        op = {k: v for k, v in result["op"].items() if k != "kind"}
        status = "applied" if result["applied"] else f"rejected: {result['reason']}"
        text.append(printable(f"{result['op']['kind'].upper()} {json.dumps(op)} → "),
                    style="bold" if result["applied"] else "dim")
        text.append(printable(f"{status}" + (f" (id {result['id']})" if result["id"] else "")
                              + "\n"), style="green" if result["applied"] else "red")
    text.rstrip()
    return text or Text("(no ops)", style="dim")


def _memory_text(view: TimelineStep) -> Text:
    text = Text()
    styles = {"+": "green", "-": "red", "~": "yellow"}
    for sign, entry, content in view.memory:
        text.append(printable(f"{sign} {'[' + entry + '] ' if entry else ''}{content}\n"),
                    style=styles.get(sign, ""))
    text.rstrip()
    return text or Text("(unchanged)", style="dim")


def render_terminal(timeline: Timeline, console: Console) -> None:
    """Print the timeline: a header, then one panel per step and a rule at segment ends."""
    t = timeline.trajectory
    console.print(Rule(Text(printable(timeline.title), style="bold magenta")))
    console.print(Text(printable(
        f"seed {t.seed} · config {json.dumps(t.config)} · return {t.episode_return:+.4f} · "
        f"terms {json.dumps(t.reward_terms)}"
        + (f" · forked from {t.parent_id} at step {t.parent_step}" if t.parent_id else ""))))
    if timeline.note:
        console.print(Text(printable(timeline.note), style="bold red"))
    for view in timeline.steps:
        s = view.step
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold cyan", no_wrap=True)
        grid.add_column()
        grid.add_row("input", Text(printable(view.new_input)))
        grid.add_row("action", Text(printable(s.action)))
        grid.add_row("ops", _ops_text(s))
        grid.add_row(f"memory ({timeline.memory_source})", _memory_text(view))
        if qa := qa_lines(s):
            grid.add_row("qa", Text(printable("\n".join(qa))))
        terms = " ".join(f"{k}={v:+.4f}" for k, v in s.reward_terms.items())
        grid.add_row("reward", Text(printable(f"{s.reward:+.4f}  ({terms})")))
        size = f" · bank {view.bank_size}" if view.bank_size is not None else ""
        console.print(Panel(grid, title=f"step {s.index}{size}", title_align="left"))
        if s.segment_end:
            console.print(Rule(printable(f"segment ends ({s.segment_end})"), style="yellow"))
    console.print(Text(f"final observation: {t.final_observation[-TAIL_CHARS:]!r}",
                       style="dim"))

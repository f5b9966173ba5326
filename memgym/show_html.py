"""A self-contained HTML page of a :class:`memgym.show.Timeline`: a title banner, a summary, plots
(reward terms per step, bank size per step, op mix) as inline SVG drawn with matplotlib's
``Figure`` (no pyplot state), and the step timeline. No scripts, no external CSS, fonts or
images: the file renders offline as it is.
"""

from __future__ import annotations

import html
import io
import json
from collections import Counter
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from memgym.show import Timeline, TimelineStep, qa_lines

BANNER_COLOR = "#7b2cbf"  # the title banner's background (the browser test looks for it)

_CSS = f"""
body {{ font-family: sans-serif; margin: 0; background: #fff; color: #222; }}
#title-banner {{ background: {BANNER_COLOR}; color: #fff; font-size: 30px; font-weight: bold;
  padding: 28px 24px; }}
section {{ padding: 8px 24px; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.plots figure {{ margin: 0; }}
table.timeline {{ border-collapse: collapse; width: 100%; font-size: 13px; }}
.timeline th, .timeline td {{ border: 1px solid #ccc; padding: 4px 6px; vertical-align: top; }}
.timeline th {{ background: #eee; }}
.timeline pre {{ white-space: pre-wrap; word-break: break-word; margin: 0; max-width: 420px; }}
tr.segment-end td {{ border-bottom: 3px solid {BANNER_COLOR}; }}
.add {{ color: #137333; }} .del {{ color: #c5221f; }} .chg {{ color: #b06000; }}
.rejected {{ color: #c5221f; }} .qa {{ color: #1a5fb4; margin-top: 4px; }}
.note {{ color: #c5221f; font-weight: bold; }}
"""


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype


def _figure(title: str) -> tuple[Figure, object]:
    fig = Figure(figsize=(3.6, 2.6))
    ax = fig.subplots()
    ax.set_title(title, fontsize=10)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, ax


def plots(timeline: Timeline) -> list[str]:
    """The three plots as inline SVG strings."""
    steps = [v.step for v in timeline.steps]
    x = [s.index for s in steps]
    fig, ax = _figure("reward terms per step")
    names = sorted({name for s in steps for name in s.reward_terms})
    bottom_pos, bottom_neg = [0.0] * len(x), [0.0] * len(x)
    for name in names:
        values = [s.reward_terms.get(name, 0.0) for s in steps]
        bottoms = [bp if v >= 0 else bn for v, bp, bn in zip(values, bottom_pos, bottom_neg,
                                                             strict=True)]
        ax.bar(x, values, bottom=bottoms, label=name)
        bottom_pos = [b + max(v, 0) for b, v in zip(bottom_pos, values, strict=True)]
        bottom_neg = [b + min(v, 0) for b, v in zip(bottom_neg, values, strict=True)]
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("step")
    if names:
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = [_svg(fig)]

    if timeline.memory_source == "bank":
        fig, ax = _figure("bank size after each step")
        ax.plot(x, [v.bank_size for v in timeline.steps], marker="o")
        ax.set_ylabel("entries")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        fig, ax = _figure("observation length per step")
        ax.plot(x, [len(s.observation) for s in steps], marker="o")
        ax.set_ylabel("characters")
    ax.set_xlabel("step")
    fig.tight_layout()
    out.append(_svg(fig))

    fig, ax = _figure("op mix")
    kinds = Counter(op["kind"] for s in steps for op in s.ops)
    kinds["parse error"] = sum(s.parse_error is not None for s in steps)
    labels = sorted(k for k in kinds if kinds[k]) or ["(none)"]
    ax.bar(labels, [kinds.get(k, 0) for k in labels], color="#3a86ff")
    ax.set_ylabel("count")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    out.append(_svg(fig))
    return out


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def _ops_cell(view: TimelineStep) -> str:
    s = view.step
    parts = []
    if s.parse_error:
        parts.append(f'<div class="rejected">parse error at {s.parse_error.get("position")}: '
                     f'{html.escape(str(s.parse_error.get("reason")))}</div>')
    for r in s.op_results:
        op = {k: v for k, v in r["op"].items() if k != "kind"}
        status = "applied" if r["applied"] else f"rejected: {r['reason']}"
        entry = f" (id {r['id']})" if r["id"] else ""
        parts.append(f'<div class="{"" if r["applied"] else "rejected"}"><b>'
                     f'{html.escape(r["op"]["kind"].upper())}</b> '
                     f'{html.escape(json.dumps(op))} → {html.escape(status + entry)}</div>')
    return "".join(parts) or "<i>no ops</i>"


def _memory_cell(view: TimelineStep) -> str:
    css = {"+": "add", "-": "del", "~": "chg"}
    rows = [f'<div class="{css.get(sign, "")}">{sign} '
            f'{"[" + html.escape(entry) + "] " if entry else ""}{html.escape(text)}</div>'
            for sign, entry, text in view.memory]
    return "".join(rows) or "<i>unchanged</i>"


def render_html(timeline: Timeline) -> str:
    """The whole page as a string."""
    t = timeline.trajectory
    title = html.escape(timeline.title)
    rows = []
    for view in timeline.steps:
        s = view.step
        terms = "<br>".join(f"{html.escape(k)} {v:+.4f}" for k, v in s.reward_terms.items())
        size = f"<br>bank {view.bank_size}" if view.bank_size is not None else ""
        qa = "".join(f'<div class="qa">{html.escape(line)}</div>' for line in qa_lines(s))
        rows.append(
            f'<tr class="{"segment-end" if s.segment_end else ""}"><td>{s.index}{size}</td>'
            f"<td>{_pre(view.new_input)}</td><td>{_pre(s.action)}</td>"
            f"<td>{_ops_cell(view)}{qa}</td><td>{_memory_cell(view)}</td>"
            f"<td>{s.reward:+.4f}<br>{terms}</td>"
            f"<td>{html.escape(s.segment_end or '')}</td></tr>")
    parent = (f" · forked from {html.escape(t.parent_id)} at step {t.parent_step}"
              if t.parent_id else "")
    note = f'<p class="note">{html.escape(timeline.note)}</p>' if timeline.note else ""
    figures = "".join(f"<figure>{svg}</figure>" for svg in plots(timeline))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{_CSS}</style></head>
<body>
<header id="title-banner">{title}</header>
<section class="summary"><p>seed {t.seed} · config {html.escape(json.dumps(t.config))} ·
return {t.episode_return:+.4f} · terms {html.escape(json.dumps(t.reward_terms))} ·
{len(t.steps)} steps{parent}</p>{note}</section>
<section class="plots">{figures}</section>
<section><table class="timeline">
<tr><th>step</th><th>new input</th><th>action</th><th>ops → results</th>
<th>memory ({html.escape(timeline.memory_source)})</th><th>reward</th><th>segment end</th></tr>
{"".join(rows)}
</table></section>
</body></html>
"""


def write_html(timeline: Timeline, path: str | Path) -> Path:
    """Write :func:`render_html` to ``path`` (UTF-8) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(timeline), encoding="utf-8")
    return path

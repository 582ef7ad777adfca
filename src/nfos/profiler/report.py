"""Render a Profile: a terminal report, JSON for tools, one self-contained HTML page."""

from __future__ import annotations

import html
import json
import os
from typing import Any

from rich.console import Console
from rich.table import Table

from nfos.profiler.analyze import Profile

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.json")
SHOW_LINES = 15


def schema() -> dict[str, Any]:
    """The JSON schema that :func:`to_json` output validates against."""
    with open(SCHEMA_PATH) as f:
        return json.load(f)


def to_json(p: Profile) -> dict[str, Any]:
    return p.to_json()


def render_text(p: Profile, console: Console) -> None:
    console.rule(f"[bold]nfos profile: {p.nf} ({p.workers} workers)")
    console.print(f"transactions {p.transactions:,}   commits {p.commits:,}   aborts {p.aborts:,} "
                  f"([bold]{p.abort_rate:.1%}[/bold])   irrevocable {p.irrevocable:,}")
    per = ", ".join(f"w{i}: {w['packets']:,}" for i, w in enumerate(p.per_worker))
    console.print(f"packets per worker: {per}   load imbalance (max/mean) {p.imbalance:.2f}")
    if p.imbalance_hint:
        console.print(f"[yellow]hint: {p.imbalance_hint}")
    if p.aborts == 0:
        console.print("[green]no aborts: nothing stops this NF from scaling on shared state")
        return
    note = f"{p.sampled_aborts:,} aborts recorded"
    if p.lost_records:
        note += f" ({p.lost_records:,} records overwritten before they were read: shares are from a sample)"
    console.print(note)
    t = Table(title="conflict causes, ranked", show_lines=True)
    for col in ("#", "structure", "ops", "cause", "recipe", "aborts"):
        t.add_column(col, overflow="fold")
    for i, c in enumerate(p.causes, 1):
        t.add_row(str(i), f"{c.structure}\n{c.created_at}", c.ops, c.cause, f"[bold]{c.recipe}",
                  f"{c.aborts:,}\n{c.share:.1%}")
    console.print(t)
    lt = Table(title="aborts per NF source line (the aborting access and the write it met)")
    for col in ("line", "code", "aborts", "share"):
        lt.add_column(col, overflow="fold")
    for r in p.lines[:SHOW_LINES]:
        lt.add_row(f"{r.file}:{r.line}", r.code, f"{r.aborts:,}", f"{r.share:.1%}")
    console.print(lt)


def render_html(p: Profile) -> str:
    """One self-contained page: totals, the ranked causes with a bar chart, the lines."""
    e = html.escape
    width = 520
    bars = []
    for i, c in enumerate(p.causes):
        w = max(1, int(width * c.share))
        bars.append(f'<g transform="translate(0,{i * 28})"><rect width="{w}" height="20" fill="#c0392b"/>'
                    f'<text x="{w + 6}" y="15" font-size="12">{e(c.structure)} — {e(c.ops)} '
                    f'({c.share:.1%})</text></g>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 420}" height="{max(28, 28 * len(bars))}">'
           + "".join(bars) + "</svg>")
    causes = "".join(
        f"<tr><td>{i}</td><td>{e(c.structure)}<br><small>{e(c.created_at)}</small></td><td>{e(c.ops)}</td>"
        f"<td>{e(c.cause)}</td><td><b>{e(c.recipe)}</b></td><td>{c.aborts:,} ({c.share:.1%})</td></tr>"
        for i, c in enumerate(p.causes, 1))
    lines = "".join(f"<tr><td>{e(r.file)}:{r.line}</td><td><code>{e(r.code)}</code></td><td>{r.aborts:,}</td>"
                    f"<td>{r.share:.1%}</td></tr>" for r in p.lines)
    workers = "".join(f"<tr><td>{i}</td><td>{w['packets']:,}</td><td>{w['transactions']:,}</td>"
                      f"<td>{w['aborts']:,}</td></tr>" for i, w in enumerate(p.per_worker))
    hint = f'<p class="hint">{e(p.imbalance_hint)}</p>' if p.imbalance_hint else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>nfos profile: {e(p.nf)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }}
th {{ background: #f4f4f4; }} .hint {{ color: #a66; }} code {{ white-space: pre; }}
</style></head><body>
<h1>nfos profile: {e(p.nf)} ({p.workers} workers)</h1>
<p>transactions {p.transactions:,} · commits {p.commits:,} · aborts {p.aborts:,}
(<b>{p.abort_rate:.1%}</b>) · irrevocable {p.irrevocable:,} · throughput {p.throughput_pps / 1e6:.3f} Mpps ·
load imbalance {p.imbalance:.2f} · {p.sampled_aborts:,} aborts recorded</p>{hint}
<h2>Conflict causes, ranked</h2>{svg}
<table><tr><th>#</th><th>structure</th><th>ops</th><th>cause</th><th>recipe</th><th>aborts</th></tr>{causes}</table>
<h2>Aborts per NF source line</h2>
<table><tr><th>line</th><th>code</th><th>aborts</th><th>share</th></tr>{lines}</table>
<h2>Workers</h2>
<table><tr><th>worker</th><th>packets</th><th>transactions</th><th>aborts</th></tr>{workers}</table>
</body></html>
"""

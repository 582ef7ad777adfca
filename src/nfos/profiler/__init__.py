"""Scalability profiler: aborts per NF line, ranked conflict causes and their recipes."""

from nfos.profiler.analyze import CauseRow, LineRow, Profile, analyze, classify
from nfos.profiler.report import render_html, render_text, schema, to_json

__all__ = ["CauseRow", "LineRow", "Profile", "analyze", "classify", "render_html", "render_text", "schema",
           "to_json"]

"""Generate docs/modules.md from the module declarations (chaos_go/modules/*/params.schema.json,
and schemas/monitor_probes/*.schema.json for the probes that run only from the monitor).

    .venv/bin/python tools/gen_docs.py          # rewrite docs/modules.md
    .venv/bin/python tools/gen_docs.py --check  # exit 1 if it is out of date

The declarations are the single source of truth for a module's parameters and result
fields (lint checks against them, `chaosrun modules` prints them); this page is the same
text for people who read docs in a browser. tests/unit/test_docs.py fails when the page
and the declarations disagree.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from chaosrun.modules import MONITOR_NOTE, ModuleDecl, ModuleKind, Param, catalogue, first_sentence
from chaosrun.scenario import Origin

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "modules.md"
COMMAND = ".venv/bin/python tools/gen_docs.py"

_KINDS = (
    (ModuleKind.CHAOS, "Chaos modules", "change a testenv; used as `chaos: NAME` in `steps`"),
    (ModuleKind.PROBE, "Probes", "only look; used as `probe: NAME` in `verify` (or in `steps`), graded by `expect`"),
)


def cell(text: str) -> str:
    """Text made safe for one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|") or " "


def _flag(param: Param) -> str:
    if param.required:
        return "**required**"
    if param.has_default:
        return f"default `{json.dumps(param.default)}`"
    return "optional"


def render_module(decl: ModuleDecl) -> list[str]:
    """The section of one module."""
    lines = [f"### `{decl.name}`", "", decl.description.strip(), ""]
    if decl.needs:
        lines += [f"**Needs** {decl.needs}: lint warns, and without it the step fails and changes nothing.", ""]
    for unless, message in decl.warnings:
        given = ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in unless.items())
        lines += [f"**Lint warns** unless {given}: {message}.", ""]
    if decl.kind is ModuleKind.PROBE:
        lines += [_where(decl), ""]
    if decl.params:
        lines += ["| parameter | type | required / default | description |", "|---|---|---|---|"]
        for p in decl.params:
            choices = f" One of {', '.join(f'`{json.dumps(v)}`' for v in p.enum)}." if p.enum else ""
            lines.append(f"| `{p.name}` | {cell(p.shown_type)} | {_flag(p)} | {cell(p.description + choices)} |")
    else:
        lines.append("No parameters.")
    lines.append("")
    if decl.results:
        where = "`steps.ID.result.FIELD`" + (", or `result.FIELD` in `expect`" if decl.kind is ModuleKind.PROBE else "")
        lines += [
            f"Result fields ({where}):",
            "",
            "| field | type | description |",
            "|---|---|---|",
        ]
        for f in decl.results:
            lines.append(f"| `{f.name}` | {cell(f.type)} | {cell(f.description)} |")
        lines.append("")
    return lines


def _where(decl: ModuleDecl) -> str:
    if not decl.runs_from(Origin.MONITOR):
        return "Runs on the target (`from: target`, the default)."
    if decl.runs_from(Origin.TARGET):
        where = "Runs on the target (`from: target`, the default) or from the monitor (`from: monitor`)."
    else:
        where = "Runs only from the monitor (`from: monitor`)."
    return f"{where} {MONITOR_NOTE}"


#: Where the hand-written end of docs/modules.md starts; render keeps it from there on as it is.
HAND_WRITTEN = "<!-- Hand-written from here to the end of the page: tools/gen_docs.py keeps it as it is. -->"


def hand_written(text: str) -> str:
    """The hand-written end of a docs/modules.md (from the HAND_WRITTEN marker on), or ""."""
    start = text.find(HAND_WRITTEN)
    return "" if start < 0 else text[start:].rstrip("\n") + "\n"


def render(modules: Mapping[str, ModuleDecl], tail: str | None = None) -> str:
    """The whole of docs/modules.md: generated from the declarations, then the hand-written
    ``tail`` (by default the one the current page ends with)."""
    if tail is None:
        tail = hand_written(OUTPUT.read_text(encoding="utf-8")) if OUTPUT.exists() else ""
    lines = [
        "# Modules",
        "",
        "<!-- Generated from chaos_go/modules/*/params.schema.json and schemas/monitor_probes/*.schema.json",
        f"     (up to the hand-written end); do not edit. Regenerate: {COMMAND} -->",
        "",
        "Every module is a small Go program in `chaos_go/modules/NAME/`, built on demand and run on the",
        "target for one step. Its `params.schema.json` declares the parameters below; `chaosrun lint`",
        "checks each step's `with:` against it, and `chaosrun modules NAME` prints the same from the",
        "command line. To write a module, see [module-authoring.md](module-authoring.md).",
        "",
        "A few probes run on the monitor instead (`from: monitor`): no binary goes to the target, the",
        "monitor reaches the target's address over the network as any client would. Those that run",
        "only there are declared in `schemas/monitor_probes/NAME.schema.json`. Which to prefer, and",
        "why, is in [guide-authors.md](guide-authors.md#probes-from-the-monitor). From the monitor:",
        ", ".join(f"[`{d.name}`](#{_anchor(d.name)})" for d in modules.values() if d.runs_from(Origin.MONITOR)) + ".",
        "",
    ]
    for kind, title, what in _KINDS:
        group = [d for d in modules.values() if d.kind is kind]
        if not group:
            continue
        lines += [f"- [{title}](#{_anchor(title)}) ({len(group)}): {what}"]
    lines.append("")
    for kind, title, what in _KINDS:
        group = [d for d in modules.values() if d.kind is kind]
        if not group:
            continue
        lines += [f"## {title}", "", f"These {what}.", "", "| module | what it does |", "|---|---|"]
        for d in group:
            lines.append(f"| [`{d.name}`](#{_anchor(d.name)}) | {cell(_first_sentence(d.description))} |")
        lines.append("")
        for d in group:
            lines += render_module(d)
    page = "\n".join(_strip_trailing_blank(lines)) + "\n"
    return page + "\n" + tail if tail else page


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, spaces to '-', punctuation other than '-'/'_' dropped."""
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def _first_sentence(text: str) -> str:
    return first_sentence(" ".join(text.split())) + "."


def _strip_trailing_blank(lines: Iterable[str]) -> list[str]:
    out = list(lines)
    while out and not out[-1].strip():
        out.pop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/modules.md is out of date")
    args = parser.parse_args(argv)
    text = render(catalogue())
    current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
    if args.check:
        if current != text:
            print(f"docs/modules.md is out of date: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    if current != text:
        OUTPUT.write_text(text, encoding="utf-8")
        print(f"wrote {OUTPUT.relative_to(REPO)} ({len(catalogue())} modules)")
    else:
        print(f"{OUTPUT.relative_to(REPO)} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())

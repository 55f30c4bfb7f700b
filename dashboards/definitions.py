"""The help page's text: docs/dashboards.md rendered to HTML, so each figure's definition is one
click away from the figure (``/dashboard/help/#<anchor>``).

A small renderer for the subset the doc uses (headings, paragraphs, lists, tables, fenced code,
inline code, bold and links), escaping everything else. Headings get GitHub's anchors; each table
row gets the anchor of its first cell (``| in progress | ...`` -> ``id="in-progress"``), which is
what the pages link to (dashboards/pages.py ANCHORS)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from django.conf import settings
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

DOC = "docs/dashboards.md"

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def slug(text: str) -> str:
    """GitHub's heading anchor: lower case, markup and punctuation dropped, spaces to dashes."""
    plain = re.sub(r"[`*_\[\]()]", "", text).strip().lower()
    plain = re.sub(r"[^\w\s-]", "", plain)
    return re.sub(r"\s+", "-", plain)


def inline(text: str) -> str:
    """Escaped text with code, bold and links (http(s) and in-page links only)."""
    parts = _CODE.split(text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{escape(part)}</code>")
            continue
        html = str(escape(part))
        html = _BOLD.sub(r"<strong>\1</strong>", html)
        html = _LINK.sub(
            lambda m: (
                f'<a href="{m.group(2)}">{m.group(1)}</a>'
                if m.group(2).startswith(("http://", "https://", "#"))
                else m.group(1)
            ),
            html,
        )
        out.append(html)
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def render(markdown: str) -> str:
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                block.append(lines[i])
                i += 1
            out.append(f"<pre><code>{escape(chr(10).join(block))}</code></pre>")
            i += 1
            continue
        heading = re.match(r"(#{1,6})\s+(.*)", line)
        if heading:
            level, text = len(heading.group(1)), heading.group(2)
            out.append(f'<h{level} id="{slug(text)}">{inline(text)}</h{level}>')
            i += 1
            continue
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i])
                i += 1
            head, body = _cells(rows[0]), [r for r in rows[1:] if not re.fullmatch(r"[|\s:-]+", r)]
            html = ["<table><thead><tr>"]
            html += [f'<th scope="col">{inline(c)}</th>' for c in head]
            html.append("</tr></thead><tbody>")
            for row in body:
                cells = _cells(row)
                html.append(f'<tr id="{slug(cells[0])}">')
                html.append(f'<th scope="row">{inline(cells[0])}</th>')
                html += [f"<td>{inline(c)}</td>" for c in cells[1:]]
                html.append("</tr>")
            html.append("</tbody></table>")
            out.append("".join(html))
            continue
        if re.match(r"\s*[-*]\s+", line):
            items: list[str] = []
            while i < len(lines) and lines[i].strip():
                item = re.match(r"\s*[-*]\s+(.*)", lines[i])
                if item:
                    items.append(item.group(1))
                elif items:
                    items[-1] += " " + lines[i].strip()
                i += 1
            out.append("<ul>" + "".join(f"<li>{inline(t)}</li>" for t in items) + "</ul>")
            continue
        if not line.strip():
            i += 1
            continue
        para = []
        while (
            i < len(lines)
            and lines[i].strip()
            and not lines[i].startswith(("#", "|", "```"))
            and not re.match(r"\s*[-*]\s+", lines[i])
        ):
            para.append(lines[i].strip())
            i += 1
        out.append(f"<p>{inline(' '.join(para))}</p>")
    return "\n".join(out)


@cache
def _rendered(path: str, mtime: float) -> str:
    return render(Path(path).read_text(encoding="utf-8"))


def rendered() -> SafeString:
    """docs/dashboards.md as HTML (cached until the file changes)."""
    path = Path(settings.BASE_DIR) / DOC
    try:
        html = _rendered(str(path), path.stat().st_mtime)
    except OSError:
        html = f"<p>The definitions are in {escape(DOC)} in the project's repository.</p>"
    return mark_safe(html)  # noqa: S308 - every text is escaped by render()

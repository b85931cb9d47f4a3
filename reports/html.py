"""A single self-contained HTML report: inline CSS, images as base64 data URIs, no URLs; the only
script is the Episodes view's own inline one (reports/explorer.js), when a section holds it."""

from __future__ import annotations

import base64
import html as html_lib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.io_utils import respect_umask

_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}

_CSS = """
:root { color-scheme: light; }
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0 auto; max-width: 1200px; padding: 0 1.5em 2em; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.8em; margin: 0.8em 0 0.4em; }
h2 { font-size: 1.35em; margin-top: 1.8em; padding-bottom: 0.2em; border-bottom: 1px solid #d0d7de; }
.warning { background: #b00020; color: #fff; font-weight: bold; font-size: 1.15em;
           padding: 0.8em 1.2em; margin: 1em 0 0.5em; border: 3px solid #600010; border-radius: 6px; }
nav.toc { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 0.5em 1.2em; }
nav.toc ol { margin: 0.3em 0; padding-left: 1.5em; }
nav.toc a { color: #0550ae; text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
.table-wrap { overflow-x: auto; margin: 0.8em 0; }
table { border-collapse: collapse; font-size: 0.9em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #afb8c1; padding: 0.3em 0.6em; text-align: right; vertical-align: top; }
th { background: #eaeef2; text-align: center; }
tbody th { text-align: left; }
tbody tr:nth-child(even) { background: #f6f8fa; }
tbody tr:hover { background: #fff8c5; }
b, strong, th { font-weight: bold; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { font-size: 0.85em; color: #57606a; margin-top: 0.2em; }
.missing { color: #b00020; font-style: italic; }
footer { margin-top: 3em; padding-top: 0.5em; border-top: 1px solid #d0d7de; font-size: 0.85em; color: #57606a; }
"""


@dataclass
class Section:
    """One report section.

    ``html`` is inserted as-is (trusted raw HTML, e.g. ``DataFrame.to_html(escape=False)``);
    ``**bold**`` markers in it and escaped ``&lt;b&gt;..&lt;/b&gt;`` are turned into ``<b>``.
    ``images`` are embedded inline, each captioned with its file stem. ``text`` is escaped plain
    text; blank lines separate paragraphs. ``raw`` is trusted HTML inserted untouched (no bold
    markers, no table wrapper): the Episodes view, with its inline data and script. Order inside a
    section: text, html, raw, images.
    """

    heading: str
    html: str = ""
    images: list[Path] = field(default_factory=list)
    text: str = ""
    raw: str = ""


_BOLD_MD = re.compile(r"\*\*([^*<>\n]+?)\*\*")
_BOLD_ESCAPED = re.compile(r"&lt;(b|strong)&gt;(.*?)&lt;/\1&gt;", re.DOTALL)


def _bold(raw: str) -> str:
    """``**x**`` and escaped ``&lt;b&gt;x&lt;/b&gt;`` -> ``<b>x</b>`` so table emphasis survives."""
    raw = _BOLD_ESCAPED.sub(lambda m: f"<{m.group(1)}>{m.group(2)}</{m.group(1)}>", raw)
    return _BOLD_MD.sub(r"<b>\1</b>", raw)


def _slug(text: str, index: int, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug = f"sec-{index}-{base}"[:80]
    while slug in used:
        slug += "-x"
    used.add(slug)
    return slug


def _image_html(path: Path, page_dir: Path | None = None) -> str:
    """An inline image; when the file lies beside the page, a link to the full-size file too (wide
    figures are shrunk to the page width)."""
    path = Path(path)
    caption = html_lib.escape(path.stem)
    if not path.is_file():
        return f'<p class="missing">missing image: {html_lib.escape(str(path))}</p>'
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    link = ""
    if page_dir is not None:
        try:
            rel = path.resolve().relative_to(Path(page_dir).resolve()).as_posix()
            link = f' (<a href="{html_lib.escape(rel)}">full size</a>)'
        except ValueError:
            pass
    return (
        f'<figure><img src="data:{mime};base64,{data}" alt="{caption}">'
        f"<figcaption>{caption}{link}</figcaption></figure>"
    )


def _paragraphs(text: str) -> str:
    parts = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "\n".join(f"<p>{html_lib.escape(p).replace(chr(10), '<br>')}</p>" for p in parts)


def render_html(
    title: str,
    sections: list[Section],
    warning: str | None = None,
    footer: str = "",
    page_dir: Path | None = None,
) -> str:
    """The report as an HTML string (see :func:`write_html`); ``page_dir``: the folder the page will
    be written to (images below it get a relative "full size" link)."""
    esc_title = html_lib.escape(title)
    used: set[str] = set()
    anchors = [_slug(s.heading, i, used) for i, s in enumerate(sections, start=1)]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc_title}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
    ]
    if warning:
        out.append(f'<div class="warning" role="alert">{html_lib.escape(warning)}</div>')
    out.append(f"<h1>{esc_title}</h1>")
    if sections:
        out.append('<nav class="toc"><strong>Contents</strong><ol>')
        for s, a in zip(sections, anchors, strict=True):
            out.append(f'<li><a href="#{a}">{html_lib.escape(s.heading)}</a></li>')
        out.append("</ol></nav>")
    for s, a in zip(sections, anchors, strict=True):
        out.append(f'<section id="{a}">')
        out.append(f"<h2>{html_lib.escape(s.heading)}</h2>")
        if s.text:
            out.append(_paragraphs(s.text))
        if s.html:
            out.append(f'<div class="table-wrap">{_bold(s.html)}</div>')
        if s.raw:
            out.append(s.raw)
        out.extend(_image_html(p, page_dir) for p in s.images)
        out.append("</section>")
    if footer:
        out.append(f"<footer>{_paragraphs(footer)}</footer>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def write_html(
    path: Path, title: str, sections: list[Section], warning: str | None = None, footer: str = ""
) -> Path:
    """Write one self-contained HTML report to ``path`` atomically and return ``path``.

    Layout: a red warning banner (``warning``, e.g. the random-init notice) at the very top, the
    escaped ``title`` as ``<h1>``, a table of contents linking to each section's anchor, then the
    sections (``<h2>`` heading, escaped ``text``, raw ``html``, inline images) and the escaped
    ``footer``. Inline CSS only; images are base64 data URIs; no external URLs, so the file reads
    the same offline; no JavaScript except what a section's ``raw`` holds (the Episodes view's
    inline script). Folders are created; the file is written to a temporary
    name in the same folder and moved into place with ``os.replace``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = render_html(title, sections, warning=warning, footer=footer, page_dir=path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(doc)
            fh.flush()
            os.fsync(fh.fileno())
        respect_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

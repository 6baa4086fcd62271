"""Markdown + HTML reports built from the same list of blocks (text, tables, figures).

A block is ``("text", str)``, ``("table", (header, rows))``, ``("figure", (png_path, caption))`` or
``("html", (fragment, markdown))``: an HTML fragment for the page (an interactive viewer) and the Markdown line that
stands for it; figure paths are written relative to the report folder.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from gtgm.fsutil import write_text

Block = tuple[str, Any]


def write_report(out_dir: str | Path, title: str, blocks: list[Block], name: str = "report") -> tuple[Path, Path]:
    """Write ``<name>.md`` and ``<name>.html`` into ``out_dir``; returns both paths."""
    out_dir = Path(out_dir)
    md, body = [f"# {title}", ""], [f"<h1>{html.escape(title)}</h1>"]
    for kind, value in blocks:
        if kind == "heading":
            md += [f"## {value}", ""]
            body.append(f"<h2>{html.escape(value)}</h2>")
        elif kind == "text":
            md += [value, ""]
            body.append(f"<p>{html.escape(value)}</p>")
        elif kind == "table":
            header, rows = value
            md += ["| " + " | ".join(map(str, header)) + " |", "|" + " --- |" * len(header)]
            md += ["| " + " | ".join(map(str, r)) + " |" for r in rows] + [""]
            cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
            trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
            body.append(f"<table><thead><tr>{cells}</tr></thead><tbody>{trs}</tbody></table>")
        elif kind == "figure":
            path, caption = value
            rel = Path(path).resolve().relative_to(out_dir.resolve()).as_posix()
            md += [f"![{caption}]({rel})", "", f"*{caption}*", ""]
            body.append(
                f'<figure><img src="{html.escape(rel)}" alt="{html.escape(caption)}"><figcaption>'
                f"{html.escape(caption)}</figcaption></figure>"
            )
        elif kind == "html":
            fragment, text = value
            md += [text, ""]
            body.append(fragment)
        else:
            raise ValueError(f"unknown report block kind '{kind}'")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%}"
        "img{max-width:100%}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    md_path, html_path = out_dir / f"{name}.md", out_dir / f"{name}.html"
    write_text(md_path, "\n".join(md))
    write_text(html_path, page)
    return md_path, html_path


CONVENTIONS = ("radiological", "neurological")


def orient_lateral(ax: Any, convention: str = "radiological", marks: bool = True) -> None:
    """Show a view whose horizontal axis is RAS x (an axial or coronal slice drawn as
    ``imshow(slice.T, origin="lower")``, so x, towards the patient's right, grows to the image's right) in
    ``convention``:

    * ``radiological`` (the default; how radiologists read axial and coronal images): the patient's right on the
      image's left, by flipping the horizontal axis;
    * ``neurological``: the patient's right on the image's right (the array's own order).

    ``marks``: an "R" and an "L" at the two sides of the view, so that no reader has to know the convention.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown figure convention '{convention}' (expected one of {', '.join(CONVENTIONS)})")
    if convention == "radiological":
        ax.invert_xaxis()
    if marks:
        right = 0.04 if convention == "radiological" else 0.96  # where the patient's right is, in axes units
        for side, x in (("R", right), ("L", 1.0 - right)):
            ax.text(
                x,
                0.5,
                side,
                transform=ax.transAxes,
                color="yellow",
                fontsize=9,
                fontweight="bold",
                ha="center",
                va="center",
            )

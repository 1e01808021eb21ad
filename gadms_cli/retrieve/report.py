"""Search results for people: rich table rows, coloured tokens, a JSON document and an offline HTML page.

All three views are built from one JSON-ready payload (:func:`results_payload`), so they agree.

The HTML page is one self-contained file: thumbnails are EMBEDDED as base64 JPEG data
URIs (at most 96x192 pixels, about 4 kB each), so the page works offline, after the
gallery moves, and when sent to someone else; each thumbnail links to the original
file (``file://``). Every piece of text that comes from the user or the file system
(queries, paths, model names, tokens) is HTML-escaped, and a Content-Security-Policy
forbids scripts, so a query such as ``<script>...`` is shown, never run.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any, Sequence

from rich.table import Table
from rich.text import Text

from gadms_cli import __version__
from gadms_cli.fileio import atomic_write
from gadms_cli.retrieve.explain import ATTRIBUTION_NAMES, Explanation
from gadms_cli.retrieve.gallery_index import IndexReport
from gadms_cli.retrieve.retriever import QueryResult

THUMBNAIL_BOX = (96, 192)  # (width, height) in pixels: person crops are about 1:3
_HOT = (255, 140, 0)  # token colour at score 1 (orange); score 0 is no colour


def heat_rgb(score: float) -> tuple[int, int, int]:
    """Background colour of a token with score ``score`` in [0, 1]: white -> orange."""
    s = min(1.0, max(0.0, float(score)))
    return tuple(round(255 + (hot - 255) * s) for hot in _HOT)  # type: ignore[return-value]


# --- terminal ---------------------------------------------------------------------------


def printable(text: str) -> str:
    """``text`` with control characters (terminal escape sequences included) shown as ``\\xNN``:
    a file name can hold anything, and the terminal must not execute it."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def results_table(result: QueryResult) -> Table:
    """A rich table (rank, score, path) of one query's hits; every cell is plain text (no markup)."""
    title = Text(f"{result.kind} query: ", style="bold")
    title.append(printable(result.query))
    table = Table(title=title, title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("path", overflow="fold")
    for hit in result.hits:
        table.add_row(str(hit.rank), f"{hit.score:.4f}", Text(printable(hit.path)))
    return table


def explanation_text(explanation: Explanation) -> Text:
    """The query's tokens coloured by score (orange = carried the match), for the terminal."""
    text = Text(f"why the top match ({ATTRIBUTION_NAMES.get(explanation.attribution, explanation.attribution)}): ", style="bold")
    for token in explanation.tokens:
        if token.special:
            continue
        if token.score >= 0.1:
            r, g, b = heat_rgb(token.score)
            text.append(token.text, style=f"black on rgb({r},{g},{b})")
        else:
            text.append(token.text, style="dim")
        if token.ends_word:
            text.append(" ")
    text.append(f"(similarity {explanation.similarity:.3f})", style="dim")
    return text


# --- JSON -------------------------------------------------------------------------------


def explanation_payload(explanation: Explanation) -> dict[str, Any]:
    return {
        "path": str(explanation.path),
        "similarity": explanation.similarity,
        "attribution": explanation.attribution,
        "tokens": [
            {"token": t.text, "score": t.score, "raw": t.raw, "special": t.special, "ends_word": t.ends_word}
            for t in explanation.tokens
        ],
        "words": [{"word": word, "score": score} for word, score in explanation.words()],
    }


def results_payload(
    results: Sequence[QueryResult],
    *,
    gallery: Path,
    model: str,
    fingerprint: str,
    index_report: IndexReport | None,
    backend: str,
    top_k: int,
) -> dict[str, Any]:
    """Everything a search produced, JSON-ready (documented in docs/retrieve.md)."""
    payload: dict[str, Any] = {
        "gadms_version": __version__,
        "model": model,
        "model_fingerprint": fingerprint,
        "gallery": str(gallery),
        "search": {"backend": backend, "top_k": top_k},
        "queries": [],
    }
    if index_report is not None:
        payload["index"] = {
            "folder": str(index_report.directory),
            "images": index_report.images,
            "encoded": index_report.encoded,
            "reused": index_report.reused,
            "dropped": index_report.dropped,
            "unreadable": len(index_report.unreadable),
            "unreadable_files": list(index_report.unreadable),
            "seconds": round(index_report.seconds, 3),
            "warnings": list(index_report.warnings),
        }
    for result in results:
        payload["queries"].append(
            {
                "query": result.query,
                "kind": result.kind,
                "results": [
                    {"rank": h.rank, "score": h.score, "path": str(h.path), "relative_path": h.relative_path}
                    for h in result.hits
                ],
                "explanation": explanation_payload(result.explanation) if result.explanation else None,
                "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()},
            }
        )
    return payload


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write the payload as indented UTF-8 JSON, atomically."""
    import json

    with atomic_write(path) as handle:
        json.dump(payload, handle, indent=1, ensure_ascii=False)
        handle.write("\n")


# --- HTML -------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
.meta { color: #666; font-size: 0.85em; }
.hits { display: flex; flex-wrap: wrap; gap: 12px; list-style: none; padding: 0; }
.hits li { width: 120px; font-size: 0.8em; }
.hits img { display: block; max-width: 96px; max-height: 192px; border: 1px solid #ccc; }
.missing { width: 96px; height: 96px; background: #eee; color: #999; font-size: 0.8em; }
.path { color: #666; word-break: break-all; }
.tokens span { padding: 1px 2px; border-radius: 3px; }
"""


def escape(value: Any) -> str:
    """HTML-escape any value's text (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def thumbnail_data_uri(path: Path, box: tuple[int, int] = THUMBNAIL_BOX) -> str | None:
    """A ``data:image/jpeg;base64,...`` thumbnail fitting ``box`` (width, height), or None if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail(box)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=80)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _tokens_html(explanation: dict[str, Any]) -> str:
    spans = []
    for token in explanation["tokens"]:
        if token["special"]:
            continue
        r, g, b = heat_rgb(token["score"])
        spans.append(
            f'<span style="background: rgb({r},{g},{b})" title="score {token["score"]:.3f}">{escape(token["token"])}</span>'
            + (" " if token["ends_word"] else "")
        )
    name = ATTRIBUTION_NAMES.get(explanation.get("attribution", "ga"), "GA score")
    return (
        f'<p class="tokens">why the top match ({escape(name)} of each token, orange = carried the match): '
        + "".join(spans)
        + f' <span class="meta">similarity {explanation["similarity"]:.3f}</span></p>'
    )


def _hit_html(hit: dict[str, Any], thumbnails: bool) -> str:
    path = Path(hit["path"])
    uri = thumbnail_data_uri(path) if thumbnails else None
    picture = (
        f'<img src="{escape(uri)}" alt="{escape(hit["relative_path"])}">'
        if uri
        else '<div class="missing">image unavailable</div>'
    )
    link = escape(path.as_uri()) if path.is_absolute() else escape(hit["path"])
    return (
        f'<li><a href="{link}">{picture}</a>'
        f'<div>#{int(hit["rank"])} &middot; {float(hit["score"]):.4f}</div>'
        f'<div class="path">{escape(hit["relative_path"])}</div></li>'
    )


def render_html(payload: dict[str, Any], thumbnails: bool = True) -> str:
    """The offline results page for a :func:`results_payload` (one string, UTF-8 HTML5)."""
    queries = payload["queries"]
    title = "gadms retrieve: " + (queries[0]["query"] if queries else "no query")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">",
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        "<h1>gadms retrieve</h1>",
        f'<p class="meta">gallery {escape(payload["gallery"])} &middot; model {escape(payload["model"])} '
        f'&middot; {escape(payload["search"]["backend"])} search, top {int(payload["search"]["top_k"])}</p>',
    ]
    for number, query in enumerate(queries, start=1):
        label = "image query" if query["kind"] == "image" else "query"
        parts.append(f'<section><h2>{number}. {label}: <q>{escape(query["query"])}</q></h2>')
        if query.get("explanation"):
            parts.append(_tokens_html(query["explanation"]))
        if query["results"]:
            parts.append('<ol class="hits">' + "".join(_hit_html(hit, thumbnails) for hit in query["results"]) + "</ol>")
        else:
            parts.append("<p>no images in the gallery</p>")
        parts.append("</section>")
    parts.append(f'<p class="meta">made by gadms {escape(payload["gadms_version"])}</p></body></html>')
    return "\n".join(parts) + "\n"


def write_html(path: str | os.PathLike, payload: dict[str, Any], thumbnails: bool = True) -> None:
    """Write :func:`render_html` to ``path``, atomically."""
    with atomic_write(path) as handle:
        handle.write(render_html(payload, thumbnails))

"""``gadms retrieve``: search a photo folder with a sentence (or an example image).

A thin layer over :class:`gadms_cli.retrieve.Retriever`: check the inputs, load the
model, bring the gallery's index up to date, search, print a table per query, and
write ``--json`` / ``--html`` when asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gadms_cli.commands.common import cli_command, console, err_console, print_load_report

_SHOWN_UNREADABLE = 5  # unreadable files named in the terminal warning (all of them go to --json)


def read_queries(path: Path) -> list[str]:
    """One query per line of a UTF-8 file; blank lines are skipped."""
    from gadms_cli.errors import GadmsError

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise GadmsError(f"--queries {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise GadmsError(f"--queries {path}: unreadable ({type(error).__name__}); expected UTF-8 text, one query per line") from None
    queries = [line.strip() for line in lines if line.strip()]
    if not queries:
        raise GadmsError(f"--queries {path}: no query in it (one query per line)")
    return queries


@cli_command
def retrieve(
    query: Optional[str] = typer.Argument(None, help="The sentence to search for, e.g. \"a woman wearing a red coat\"."),
    gallery: Path = typer.Option(..., "--gallery", help="Folder of images to search (searched recursively: jpg, jpeg, png, webp, bmp)."),
    model: Optional[str] = typer.Option(None, "--model", help="Run or checkpoint dir, IRRA-family .pth, weights file, or open_clip architecture. Default: $GADMS_MODEL, then the quickstart's model."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="With an architecture name: open_clip tag (e.g. openai) or local weights file."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture of a plain open_clip weights file given as --model (default ViT-B-16)."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help="HEIGHTxWIDTH for an architecture or weights file, e.g. 384x128 (checkpoints keep theirs)."),
    source_image_size: Optional[str] = typer.Option(None, "--source-image-size", help="HEIGHTxWIDTH an IRRA-family .pth was trained at, when its patch grid does not tell (e.g. 384x192)."),
    queries_file: Optional[Path] = typer.Option(None, "--queries", help="File with more queries, one per line."),
    image: Optional[Path] = typer.Option(None, "--image", help="Search with an example image instead of (or besides) a sentence."),
    top_k: int = typer.Option(10, "--top-k", min=1, help="Results per query."),
    index: Optional[Path] = typer.Option(None, "--index", help="Folder for the cached embeddings (default GALLERY/.gadms)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write every result (and explanation) as JSON to this file."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write an offline HTML page with thumbnails to this file."),
    explain: bool = typer.Option(False, "--explain", help="Show which query words carried the top match."),
    attribution: str = typer.Option("loo", "--attribution", help="Token scores for --explain: loo (exact leave-one-out) or ga (GA score)."),
    batch_size: int = typer.Option(128, "--batch-size", min=1, help="Images per encoding batch."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Image decoding processes (default: half the CPUs)."),
    backend: str = typer.Option("auto", "--backend", help="auto, torch (exact) or faiss (approximate; pip install faiss-cpu)."),
) -> None:
    """Search a photo folder with a sentence; the folder's embeddings are cached and updated incrementally."""
    from gadms_cli.commands.eval import parse_image_size
    from gadms_cli.errors import GadmsError
    from gadms_cli.retrieve.explain import ATTRIBUTIONS
    from gadms_cli.retrieve.report import explanation_text, printable, results_payload, results_table, write_html, write_json
    from gadms_cli.model.resolve import model_spec
    from gadms_cli.retrieve.retriever import Retriever
    from gadms_cli.retrieve.search import BACKENDS

    # Check every input before the (slow) model load.
    texts = ([query] if query and query.strip() else []) + (read_queries(queries_file) if queries_file else [])
    if not texts and image is None:
        raise GadmsError('nothing to search for: give a QUERY ("a woman wearing a red coat"), --queries FILE or --image FILE')
    if not gallery.is_dir():
        raise GadmsError(f"--gallery {gallery}: not a folder")
    if image is not None and not image.is_file():
        raise GadmsError(f"--image {image}: file not found")
    if explain and not texts:
        raise GadmsError("--explain needs a text query (it scores the query's words)")
    if attribution not in ATTRIBUTIONS:
        raise GadmsError(f"--attribution {attribution}: choose one of {', '.join(ATTRIBUTIONS)}")
    if backend not in BACKENDS:
        raise GadmsError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}")

    retriever = Retriever(
        model_spec(model),  # --model, else $GADMS_MODEL, else the quickstart's model
        pretrained=pretrained,
        arch=arch,
        image_size=parse_image_size(image_size),
        source_image_size=parse_image_size(source_image_size, "--source-image-size"),
        batch_size=batch_size,
        num_workers=workers,
        backend=backend,  # type: ignore[arg-type]
    )
    print_load_report(retriever.model)
    report = retriever.index(gallery, index_dir=index)
    for warning in report.warnings:
        err_console.print(f"warning: {warning}", highlight=False, markup=False)
    if report.unreadable:
        shown = ", ".join(printable(path) for path in report.unreadable[:_SHOWN_UNREADABLE])
        more = f" and {len(report.unreadable) - _SHOWN_UNREADABLE} more" if len(report.unreadable) > _SHOWN_UNREADABLE else ""
        where = " (all listed in --json)" if json_out else ""
        err_console.print(
            f"warning: {len(report.unreadable)} unreadable image(s) skipped: {shown}{more}{where}", highlight=False, markup=False
        )
    err_console.print(
        f"index: {report.images:,} images ({report.encoded:,} encoded, {report.reused:,} reused, "
        f"{report.dropped:,} dropped) in {report.directory} [{report.seconds:.1f} s]",
        highlight=False,
        markup=False,
    )
    if report.images == 0:
        raise GadmsError(f"--gallery {gallery}: no readable image ({len(report.unreadable):,} unreadable); nothing to search")

    results = retriever.search_texts(texts, top_k, explain=explain, attribution=attribution) if texts else []
    if image is not None:
        results.append(retriever.search_image(image, top_k))
    for result in results:
        console.print(results_table(result))
        if result.explanation is not None:
            console.print(explanation_text(result.explanation))

    if json_out or html_out:
        payload = results_payload(
            results,
            gallery=retriever.gallery.gallery,  # type: ignore[union-attr]
            model=retriever.model_name,
            fingerprint=retriever.fingerprint,
            index_report=report,
            backend=retriever.searcher.name,
            top_k=top_k,
        )
        if json_out:
            write_json(json_out, payload)
            console.print(f"results: {json_out}", highlight=False, markup=False)
        if html_out:
            write_html(html_out, payload)
            console.print(f"page: {html_out}", highlight=False, markup=False)

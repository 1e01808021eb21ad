"""``gadms serve``: a search service and web page over an indexed photo folder.

A thin layer over :mod:`gadms_cli.serve`: check the options, load the model, index the
gallery (progress bar; only new or changed files are encoded), then serve with uvicorn.
Binding anywhere but loopback needs ``--token`` (or ``$GADMS_SERVE_TOKEN``).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from typing import Optional

import typer

from gadms_cli.commands.common import cli_command, console, err_console, print_load_report

TOKEN_ENV = "GADMS_SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@cli_command
def serve(
    gallery: Path = typer.Option(..., "--gallery", help="Folder of images to search (indexed recursively: jpg, jpeg, png, webp, bmp)."),
    model: Optional[str] = typer.Option(None, "--model", help="Run or checkpoint dir, IRRA-family .pth, weights file, or open_clip architecture. Default: $GADMS_MODEL, then the quickstart's model."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs --token."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port (0: any free port)."),
    token: Optional[str] = typer.Option(None, "--token", help=f"Secret every API and image request must carry (default: ${TOKEN_ENV}). Required off loopback."),
    index: Optional[Path] = typer.Option(None, "--index", help="Folder for the cached embeddings (default GALLERY/.gadms)."),
    batch_size: int = typer.Option(128, "--batch-size", min=1, help="Images per encoding batch."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Image decoding processes while indexing (default: half the CPUs)."),
    backend: str = typer.Option("auto", "--backend", help="auto, torch (exact) or faiss (approximate; pip install faiss-cpu)."),
) -> None:
    """Serve a search page and JSON API over a photo folder (http://127.0.0.1:8000 by default)."""
    import uvicorn

    from gadms_cli.errors import GadmsError
    from gadms_cli.model.resolve import model_spec
    from gadms_cli.retrieve.retriever import Retriever
    from gadms_cli.retrieve.search import BACKENDS
    from gadms_cli.serve.app import create_app
    from gadms_cli.serve.service import SearchService

    if not gallery.is_dir():
        raise GadmsError(f"--gallery {gallery}: not a folder")
    if backend not in BACKENDS:
        raise GadmsError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}")
    token = token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(host) and not token:
        raise GadmsError(
            f"--host {host} accepts connections from other machines: set --token (or ${TOKEN_ENV}), "
            f"e.g. --token {secrets.token_urlsafe(16)}, or bind --host 127.0.0.1"
        )

    retriever = Retriever(model_spec(model), batch_size=batch_size, num_workers=workers, backend=backend)  # type: ignore[arg-type]
    print_load_report(retriever.model)
    service = SearchService(retriever, gallery, index)
    report = service.reindex()
    err_console.print(
        f"index: {report.images:,} images ({report.encoded:,} encoded, {report.reused:,} reused, "
        f"{report.dropped:,} dropped, {len(report.unreadable):,} unreadable) in {report.directory} [{report.seconds:.1f} s]",
        highlight=False, markup=False,
    )
    if report.images == 0:
        raise GadmsError(f"--gallery {gallery}: no readable image; add photos, or POST /api/reindex after adding them")
    address = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"
    console.print(f"serving {gallery} on {address}" + ("?token=..." if token else "") + "  (Ctrl-C stops)", highlight=False)
    uvicorn.run(create_app(service, token), host=host, port=port, log_level="warning")

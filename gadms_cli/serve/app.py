"""The HTTP layer of ``gadms serve`` (FastAPI): JSON endpoints, images by id, the web page.

Endpoints (all JSON errors are ``{"error": "..."}``):

=========================  ====================================================================
``GET /``                  the search page (``/?q=...&k=...`` searches on load)
``GET /api/health``        ``{"status": "ok" | "indexing", "images": N}`` (503 before the first index)
``GET /api/info``          model, fingerprint, gallery size, index age, limits
``GET /api/search``        ``q`` (text, at most MAX_QUERY_CHARS), ``k`` (1..MAX_K), ``explain`` (0/1)
``GET /api/search/image``  ``id`` of an indexed image, ``k``: the images most like it
``POST /api/search/image`` multipart field ``image`` (jpeg/png/webp/bmp, at most MAX_UPLOAD_BYTES), ``k``
``POST /api/reindex``      pick up new, changed and removed photos without a restart (202)
``GET /thumb/{id}``        a JPEG thumbnail; ``GET /image/{id}``: the file itself
=========================  ====================================================================

With a token (``gadms serve --token``, required off loopback) every ``/api``, ``/thumb`` and
``/image`` request must carry it: ``Authorization: Bearer TOKEN`` or ``?token=TOKEN`` (the page
passes the one in its own URL along). Status codes: 400 bad input, 401 missing/wrong token,
404 unknown id, 413 too large, 415 not an image, 503 index not built yet.
"""

from __future__ import annotations

import hmac
import io
import time
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError

from gadms_cli import __version__
from gadms_cli.serve.service import Match, NotReady, SearchService, UnknownImage

MAX_QUERY_CHARS = 500
MAX_K = 100
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000
UPLOAD_FORMATS = {"JPEG", "PNG", "WEBP", "BMP"}


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _k(value: str | None, default: int = 10) -> int:
    if value is None or value == "":
        return default
    try:
        k = int(value)
    except ValueError:
        raise BadRequest(400, f"k must be a whole number from 1 to {MAX_K}, got {value[:20]!r}") from None
    if not 1 <= k <= MAX_K:
        raise BadRequest(400, f"k must be from 1 to {MAX_K}, got {k}")
    return k


def _matches(matches: list[Match], token: str | None) -> list[dict[str, Any]]:
    suffix = f"?token={token}" if token else ""
    return [
        {"rank": m.rank, "score": round(m.score, 6), "id": m.id, "path": m.path,
         "thumbnail": f"/thumb/{m.id}{suffix}", "image": f"/image/{m.id}{suffix}"}
        for m in matches
    ]


def create_app(service: SearchService, token: str | None = None) -> FastAPI:
    """The FastAPI application over ``service``; ``token`` (if set) guards the API and the images."""
    app = FastAPI(title="gadms serve", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    static = resources.files("gadms_cli.serve") / "static"

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        if token and path.startswith(("/api/", "/thumb/", "/image/")):
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or request.query_params.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _error(401, "missing or wrong token: send 'Authorization: Bearer TOKEN' or add ?token=TOKEN")
        return await call_next(request)

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, error: BadRequest) -> JSONResponse:
        return _error(error.status, str(error))

    @app.exception_handler(NotReady)
    async def not_ready(_: Request, error: NotReady) -> JSONResponse:
        return _error(503, str(error))

    @app.exception_handler(UnknownImage)
    async def unknown(_: Request, error: UnknownImage) -> JSONResponse:
        return _error(404, "no such image in the indexed gallery")

    @app.exception_handler(404)
    async def not_found(_: Request, error: Exception) -> JSONResponse:
        return _error(404, "not found")

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/api/health")
    def health() -> JSONResponse:
        snapshot = service.snapshot
        if snapshot is None:
            return _error(503, service.last_error or "the gallery is being indexed")
        return JSONResponse({"status": "indexing" if service.indexing else "ok", "images": len(snapshot.rows_by_id)})

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        snapshot = service.snapshot
        return {
            "gadms_version": __version__,
            "model": service.retriever.model_name,
            "model_fingerprint": service.retriever.fingerprint,
            "gallery": service.gallery.name,
            "images": len(snapshot.rows_by_id) if snapshot else None,
            "hidden": len(snapshot.hidden_rows) if snapshot else None,  # links out of the gallery
            "unreadable": len(snapshot.index.unreadable) if snapshot else None,
            "indexed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(snapshot.built_at)) if snapshot else None,
            "index_age_s": round(time.time() - snapshot.built_at, 1) if snapshot else None,
            "indexing": service.indexing,
            "last_error": service.last_error,
            "limits": {"max_query_chars": MAX_QUERY_CHARS, "max_k": MAX_K, "max_upload_bytes": MAX_UPLOAD_BYTES},
        }

    @app.get("/api/search")
    def search(q: str | None = None, k: str | None = None, explain: str = "1") -> dict[str, Any]:
        text = (q or "").strip()
        if not text:
            raise BadRequest(400, "q is empty: write what to look for, e.g. /api/search?q=a+woman+in+a+red+coat")
        if len(text) > MAX_QUERY_CHARS:
            raise BadRequest(400, f"q is {len(text)} characters; at most {MAX_QUERY_CHARS}")
        if explain not in ("0", "1", "true", "false"):
            raise BadRequest(400, f"explain must be 0 or 1, got {explain[:10]!r}")
        top_k = _k(k)
        matches, explanation, timings = service.search_text(text, top_k, explain in ("1", "true"))
        words = None
        if explanation is not None:
            words = {"attribution": explanation.attribution, "similarity": round(explanation.similarity, 6),
                     "words": [{"word": w, "score": round(s, 6)} for w, s in explanation.words()]}
        return {"query": text, "k": top_k, "results": _matches(matches, token), "explanation": words,
                "timings_ms": {key: round(value, 3) for key, value in timings.items()}}

    @app.get("/api/search/image")
    def search_by_id(id: str | None = None, k: str | None = None) -> dict[str, Any]:
        if not id:
            raise BadRequest(400, "id is missing: give the id of an indexed image (from a search result)")
        top_k = _k(k)
        return {"image": id, "k": top_k, "results": _matches(service.search_indexed_image(id, top_k), token)}

    @app.post("/api/search/image")
    async def search_by_upload(request: Request, image: UploadFile | None = None, k: str | None = None) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES + 64 * 1024:
            raise BadRequest(413, f"the upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB")
        if image is None:
            raise BadRequest(400, "send the picture as multipart form field 'image'")
        top_k = _k(k)
        data = await image.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise BadRequest(413, f"the image is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB")
        try:
            picture = Image.open(io.BytesIO(data))
            if picture.format not in UPLOAD_FORMATS:
                raise BadRequest(415, f"{picture.format} images are not accepted; send jpeg, png, webp or bmp")
            if picture.width * picture.height > MAX_UPLOAD_PIXELS:
                raise BadRequest(413, f"the image has more than {MAX_UPLOAD_PIXELS:,} pixels")
            picture.load()
        except BadRequest:
            raise
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            raise BadRequest(415, "not a readable image; send jpeg, png, webp or bmp") from None
        return {"image": image.filename or "upload", "k": top_k, "results": _matches(service.search_uploaded_image(picture, top_k), token)}

    @app.post("/api/reindex", status_code=202)
    def reindex() -> JSONResponse:
        started = service.reindex_in_background()
        return JSONResponse({"status": "indexing", "started": started}, status_code=202)

    @app.get("/thumb/{image}")
    def thumbnail(image: str) -> Response:
        return Response(service.thumbnail(image), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    @app.get("/image/{image}")
    def full_image(image: str) -> FileResponse:
        return FileResponse(service.file_of(image))

    return app

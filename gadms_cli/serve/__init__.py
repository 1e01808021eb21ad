"""``gadms serve``: an HTTP search service and web page over an indexed photo folder.

Modules: ``service`` (the model, the index snapshots, ids and thumbnails), ``app`` (the
FastAPI endpoints), ``static/`` (the page: plain HTML, CSS and JavaScript, no build step,
no CDN). See docs/serve.md.
"""

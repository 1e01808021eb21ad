"""Photo search with a sentence: gallery index, exact/faiss search, GA-score explanations, reports.

- :mod:`.gallery_index`: walk a folder, cache embeddings keyed by the model's fingerprint, update incrementally;
- :mod:`.search`: exact torch top-k (ties by gallery order) or a faiss HNSW graph for large galleries;
- :mod:`.explain`: the GA score of each query token against a match;
- :mod:`.report`: rich table, JSON and an offline HTML page;
- :mod:`.retriever`: :class:`Retriever`, the Python API the ``gadms retrieve`` command is built on.
"""

from gadms_cli.retrieve.explain import Explanation, TokenScore
from gadms_cli.retrieve.gallery_index import FileEntry, GalleryIndex, IndexReport
from gadms_cli.retrieve.retriever import Hit, QueryResult, Retriever

__all__ = ["Explanation", "FileEntry", "GalleryIndex", "Hit", "IndexReport", "QueryResult", "Retriever", "TokenScore"]

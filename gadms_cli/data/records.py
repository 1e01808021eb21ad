"""The records every reader produces and every consumer (training, eval) takes.

Training samples are one per caption (docs/data-formats.md); evaluation splits are every
caption of the split as a query against every image of the split as gallery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TrainSample:
    """One (identity, image, caption) triple of a training split.

    ``pid`` is the identity remapped to 0..N-1 (sorted raw ids), ``raw_pid`` the
    id as written in the annotation file, ``image_index`` the position of the
    image in the split's image list.
    """

    pid: int
    raw_pid: int
    image_index: int
    image_path: Path
    caption: str


@dataclass
class EvalSplit:
    """Text-to-image evaluation data of one split.

    Queries are captions (with the raw identity of their image); the gallery is
    every image of the split (with raw identity). ``query_image_index[q]`` is the
    gallery position of the image that query ``q`` was written for.
    """

    name: str
    gallery_paths: list[Path] = field(default_factory=list)
    gallery_ids: list[int] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    query_ids: list[int] = field(default_factory=list)
    query_image_index: list[int] = field(default_factory=list)

    @property
    def num_ids(self) -> int:
        return len(set(self.gallery_ids))

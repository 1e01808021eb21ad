"""Where a benchmark lives and what its files look like: the three formats' annotation file
names and folders, finding a benchmark folder by name or path, and checking one image file.

``gadms_cli/data/benchmarks.py`` reads the files; this module only finds and checks them.
"""

from __future__ import annotations

import os
from pathlib import Path

from gadms_cli.errors import GadmsError

FORMATS: tuple[str, ...] = ("cuhk-pedes", "icfg-pedes", "rstpreid")
KNOWN_SPLITS: tuple[str, ...] = ("train", "val", "test")

ANNOTATION_FILES: dict[str, tuple[str, ...]] = {
    "cuhk-pedes": ("reid_raw.json",),
    "icfg-pedes": ("ICFG-PEDES.json", "ICFG_PEDES.json"),
    "rstpreid": ("data_captions.json",),
}

# CLI name -> the folder name the benchmark usually lives in under the data root.
BENCHMARK_DIRS: dict[str, str] = {
    "cuhk-pedes": "CUHK-PEDES",
    "icfg-pedes": "ICFG-PEDES",
    "rstpreid": "RSTPReid",
}

DOWNLOAD_PAGES: dict[str, str] = {
    "cuhk-pedes": "github.com/ShuangLI59/Person-Search-with-Natural-Language-Description",
    "icfg-pedes": "github.com/zifyloo/SSAN",
    "rstpreid": "github.com/NjtechCVLab/RSTPReid-Dataset",
}

IMAGE_DIR = "imgs"
DATA_ROOT_ENV = "GADMS_DATA"
CUHK_CAPTION_ALL = "caption_all.json"

# File signatures of the image formats PIL reads for these benchmarks.
_IMAGE_SIGNATURES: tuple[bytes, ...] = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"GIF87a",
    b"GIF89a",
    b"BM",  # BMP
    b"II*\x00",  # TIFF little-endian
    b"MM\x00*",  # TIFF big-endian
)


# --- finding the benchmark ----------------------------------------------------------


def _looked_for() -> str:
    names = []
    for fmt, files in ANNOTATION_FILES.items():
        names.append(f"{' or '.join(files)} ({BENCHMARK_DIRS[fmt]})")
    return ", ".join(names)


def _found_annotations(root: Path) -> list[tuple[str, Path]]:
    return [
        (fmt, root / name)
        for fmt, names in ANNOTATION_FILES.items()
        for name in names
        if (root / name).is_file()
    ]


def is_benchmark_folder(root: Path) -> bool:
    """True when ``root`` holds a benchmark annotation file (or CUHK-PEDES's ``caption_all.json``)."""
    root = Path(root)
    return root.is_dir() and (bool(_found_annotations(root)) or (root / CUHK_CAPTION_ALL).is_file())


def _annotation_of(root: Path) -> tuple[str, Path]:
    """(format, annotation file) of a benchmark folder, or a GadmsError saying what is wrong."""
    if not root.exists():
        raise GadmsError(f"{root}: no such folder; pass the benchmark folder that holds the annotation file and {IMAGE_DIR}/")
    if not root.is_dir():
        raise GadmsError(f"{root}: not a folder; pass the benchmark folder that holds the annotation file and {IMAGE_DIR}/")
    found = _found_annotations(root)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(path.name for _, path in found)
        raise GadmsError(f"{root}: several annotation files ({names}); keep only the one of this benchmark in the folder")
    if (root / CUHK_CAPTION_ALL).is_file():
        raise GadmsError(
            f"{root / CUHK_CAPTION_ALL}: this is the original CUHK-PEDES release without train/val/test splits; "
            f"gadms needs reid_raw.json (the same captions with the standard splits), which comes with the "
            f"CUHK-PEDES download ({DOWNLOAD_PAGES['cuhk-pedes']}): put it in {root} beside {IMAGE_DIR}/"
        )
    nested = [root / name for name in BENCHMARK_DIRS.values() if (root / name).is_dir()]
    hint = f" (did you mean {nested[0]}?)" if nested else ""
    raise GadmsError(f"{root}: no benchmark annotation file; looked for {_looked_for()}{hint}")


def detect_format(root: Path) -> str:
    """The format of the benchmark in ``root``: "cuhk-pedes", "icfg-pedes" or "rstpreid"."""
    return _annotation_of(Path(root))[0]


def _data_root(data_root: Path | None) -> tuple[Path, str]:
    if data_root is not None:
        return Path(data_root).expanduser(), "--data-root"
    if os.environ.get(DATA_ROOT_ENV):
        return Path(os.environ[DATA_ROOT_ENV]).expanduser(), f"${DATA_ROOT_ENV}"
    return Path("data"), "the default ./data"


def resolve_benchmark(name_or_path: str, data_root: Path | None) -> Path:
    """The folder of a benchmark given as a CLI name (``cuhk-pedes``, ...) or as a path.

    Names are looked up under the data root: ``data_root`` if given, else ``$GADMS_DATA``,
    else ``./data``; the folder is ``<data root>/<BENCHMARK_DIRS[name]>`` (an archive
    unpacked one level deeper, ``CUHK-PEDES/CUHK-PEDES/``, is accepted too).
    """
    key = name_or_path.strip().lower()
    if key in BENCHMARK_DIRS:
        base, source = _data_root(data_root)
        folder = base / BENCHMARK_DIRS[key]
        for candidate in (folder, base / key, folder / BENCHMARK_DIRS[key]):
            if candidate.is_dir() and _found_annotations(candidate):
                return candidate
        if folder.is_dir():
            return folder  # load_benchmark will say what is missing inside it
        raise GadmsError(
            f"{BENCHMARK_DIRS[key]} not found: looked in {folder} (data root from {source}); download it from "
            f"{DOWNLOAD_PAGES[key]} and unpack it there (annotation file and {IMAGE_DIR}/), "
            f"or set --data-root / ${DATA_ROOT_ENV}, or pass --bench PATH"
        )
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    raise GadmsError(
        f"{name_or_path}: not a benchmark name ({', '.join(BENCHMARK_DIRS)}) nor an existing folder; "
        f"pass one of the names or the folder that holds the annotation file and {IMAGE_DIR}/"
    )


# --- one image file -------------------------------------------------------------------


def image_problem(path: Path, decode: bool = False) -> str | None:
    """Why the image file at ``path`` cannot be used ("missing", "empty file", ...), or None when it looks fine.

    Opens the file and checks its first bytes against the JPEG/PNG/GIF/BMP/TIFF/WebP
    signatures: cheap (no decoding) and catches missing files, permission errors,
    zero-byte files and HTML error pages saved under an image name. ``decode=True`` also
    decodes the whole image (slow), which finds truncated files and images too large to open.
    """
    reason = _signature_problem(path)
    if reason is not None or not decode:
        return reason
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except Image.DecompressionBombError:
        return "image too large (over Pillow's decompression-bomb limit)"
    except (OSError, ValueError, SyntaxError) as error:
        return f"does not decode ({str(error)[:80]})"
    return None


def _signature_problem(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except FileNotFoundError:
        return "missing"
    except IsADirectoryError:
        return "a folder, not a file"
    except PermissionError:
        return "permission denied"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if not head:
        return "empty file"
    if head.startswith(_IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    return "not an image file"

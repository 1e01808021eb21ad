"""Time reading a CUHK-PEDES-sized annotation file (40k records, 80k captions).

Builds a ``reid_raw.json`` with the real file's shape (split, captions, file_path, id,
processed_tokens; about 25 words per caption) in a temporary folder, then times
``load_benchmark(check_images=False)`` (JSON + validation) several times and prints one
JSON line with the median. With ``--images`` it also writes 40k tiny image files and
times the separate image pass (``check_images=True``).

    python benchmarks/read_annotations.py [--records 40000] [--repeats 5] [--images]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from gadms_cli.data.benchmarks import load_benchmark

WORDS = (
    "the man woman is wearing a black white red blue green grey dark light shirt jacket coat pants "
    "jeans shorts skirt shoes sneakers boots bag backpack hat glasses long short hair with and carrying "
    "walking holding his her on in left right hand shoulder striped sleeve t-shirt"
).split()

# A minimal JPEG signature is enough for the image pass (it checks file signatures, not pixels).
JPEG_HEAD = b"\xff\xd8\xff\xe0" + bytes(60)


def build_annotation(folder: Path, num_records: int, with_images: bool, seed: int = 0) -> Path:
    """Write a CUHK-PEDES-shaped reid_raw.json (2 captions per record, ~3.4 images per id) into ``folder``."""
    rng = random.Random(seed)
    records = []
    for index in range(num_records):
        fraction = index / num_records
        split = "train" if fraction < 0.85 else ("val" if fraction < 0.925 else "test")
        captions = [" ".join(rng.choices(WORDS, k=rng.randint(15, 40))) + "." for _ in range(2)]
        records.append(
            {
                "split": split,
                "captions": captions,
                "file_path": f"train_query/p{index // 4}_s{index}.jpg",
                "processed_tokens": [caption.rstrip(".").split() for caption in captions],
                "id": 1 + index * 10_000 // 34_054 // 3,
            }
        )
    path = folder / "reid_raw.json"
    path.write_text(json.dumps(records))
    if with_images:
        image_dir = folder / "imgs" / "train_query"
        image_dir.mkdir(parents=True)
        for record in records:
            (folder / "imgs" / record["file_path"]).write_bytes(JPEG_HEAD)
    return path


def median_seconds(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", action="store_true", help="also time the image pass on 40k tiny files")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        annotation = build_annotation(folder, args.records, args.images)
        bench = load_benchmark(folder, check_images=False)
        captions = sum(stats["captions"] for stats in bench.stats().values())
        result = {
            "benchmark": "read_annotations",
            "records": args.records,
            "captions": captions,
            "file_mb": round(annotation.stat().st_size / 1e6, 1),
            "repeats": args.repeats,
            "median_s": round(median_seconds(lambda: load_benchmark(folder, check_images=False), args.repeats), 3),
        }
        if args.images:
            result["with_image_pass_median_s"] = round(
                median_seconds(lambda: load_benchmark(folder, check_images=True), args.repeats), 3
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

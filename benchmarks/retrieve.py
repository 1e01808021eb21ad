"""Photo-search speed: query latency on a 100k x 512 gallery, and indexing vs. raw encoding throughput.

Three measurements, side by side in one process (the machine may be shared: every figure
is a median over repeats, and the compared variants alternate within each repeat):

1. ``search``: for each torch thread count in ``--threads`` (default: 1 and torch's default;
   on a machine whose cores are busy with other jobs, a second thread can stall a
   memory-bound product), a gallery of ``--gallery-size`` unit vectors of dimension ``--dim`` (drawn
   around 2,000 centres, so neighbours are close as in a real gallery), ``--queries``
   queries searched ONE AT A TIME (the interactive case): median ms per query for
   - ``torch-exact``: :class:`ExactSearch` as ``gadms retrieve`` uses it (float16 pass +
     exact float32 rescoring of the candidates),
   - ``torch-float32``: the same exact search with the float16 pass off,
   - ``torch-exact-batched``: all queries in one call, ms per query,
   - ``faiss-hnsw`` (when faiss is installed): graph build time, ms per query, recall@10
     against the exact result.
2. ``text``: text encoding alone (tokenize + text tower + normalise) of one query, median
   ms per thread count, for ``--text-arch`` (ViT-B-16 by default: the paper's text tower, random weights).
3. ``indexing``: ``--images`` JPEG files (``--image-height`` x ``--image-width``) encoded by
   ``--arch`` (default gadms-small, the quickstart model) with the same batch size and
   decoding workers:
   - ``raw``: ``encode_images`` over the file list (decode + transform + model), images/s;
   - ``index``: building the index from scratch (walk, stat, SHA-256, the same encoding,
     atomic save), images/s, and its ratio to raw;
   - ``forward``: the model alone on pre-decoded tensors (an upper bound for context);
   - ``unchanged``: a second run on the unchanged folder (seconds).

Usage: ``python benchmarks/retrieve.py [--repeats 5] [--images 2048] [--arch gadms-small]
[--skip-search] [--skip-indexing]``; faiss via ``pip install faiss-cpu``.
Prints one JSON line about the machine, then one per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
import torch
import torch.nn.functional as F


def make_gallery(size: int, dim: int, queries: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors around 2,000 centres: (gallery [size, dim], queries [queries, dim])."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(2000, dim, generator=generator)
    members = torch.randint(0, 2000, (size,), generator=generator)
    gallery = F.normalize(centres[members] + 0.8 * torch.randn(size, dim, generator=generator), dim=1)
    picks = torch.randint(0, 2000, (queries,), generator=generator)
    query = F.normalize(centres[picks] + 0.8 * torch.randn(queries, dim, generator=generator), dim=1)
    return gallery, query


def thread_settings(text: str) -> list[int]:
    """'1,default' -> [1, torch's default thread count]."""
    default = torch.get_num_threads()
    return [default if part.strip() == "default" else int(part) for part in text.split(",")]


def bench_search(args: argparse.Namespace) -> list[dict]:
    from gadms_cli.retrieve.search import ExactSearch, FaissSearch, faiss_available

    gallery, queries = make_gallery(args.gallery_size, args.dim, args.queries)
    exact = ExactSearch(gallery)
    plain = ExactSearch(gallery, coarse_min_rows=10**12)
    truth = plain.search(queries, 10)[1]  # every single-query result below must equal this ranking
    threads = thread_settings(args.threads)
    default_threads = torch.get_num_threads()
    per_query: dict[tuple[str, int], list[float]] = {}
    batched: dict[int, list[float]] = {n: [] for n in threads}
    for _ in range(args.repeats):  # alternate threads and variants so that load changes hit all alike
        for n in threads:
            torch.set_num_threads(n)
            for i in range(len(queries)):
                for name, searcher in (("torch-exact", exact), ("torch-float32", plain)):
                    started = time.perf_counter()
                    rows = searcher.search(queries[i : i + 1], 10)[1]
                    per_query.setdefault((name, n), []).append(1000 * (time.perf_counter() - started))
                    if not torch.equal(rows[0], truth[i]):
                        raise AssertionError(f"{name} disagrees with the float32 ranking on query {i}")
            started = time.perf_counter()
            exact.search(queries, 10)
            batched[n].append(1000 * (time.perf_counter() - started) / len(queries))
    torch.set_num_threads(default_threads)
    shape = f"{args.gallery_size}x{args.dim}"
    lines = [
        {"measure": "search", "variant": name, "threads": n, "gallery": shape,
         "ms_per_query_median": statistics.median(times), "ms_p90": statistics.quantiles(times, n=10)[-1],
         "queries": len(times)}
        for (name, n), times in per_query.items()
    ]
    lines += [
        {"measure": "search", "variant": "torch-exact-batched", "threads": n, "gallery": shape,
         "ms_per_query_median": statistics.median(times), "batch": len(queries)}
        for n, times in batched.items()
    ]
    if faiss_available():
        started = time.perf_counter()
        graph = FaissSearch(gallery)
        build_s = time.perf_counter() - started
        times = []
        for _ in range(args.repeats):
            for i in range(len(queries)):
                started = time.perf_counter()
                graph.search(queries[i : i + 1], 10)
                times.append(1000 * (time.perf_counter() - started))
        found = graph.search(queries, 10)[1]
        recall = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth)) / truth.numel()
        lines.append({"measure": "search", "variant": "faiss-hnsw", "gallery": shape,
                      "ms_per_query_median": statistics.median(times), "recall_at_10": recall, "build_s": build_s})
    else:
        lines.append({"measure": "search", "variant": "faiss-hnsw", "skipped": "faiss not installed"})
    return lines


def bench_text(args: argparse.Namespace) -> list[dict]:
    from gadms_cli.encode import encode_texts
    from gadms_cli.model.factory import create_person_clip
    from gadms_cli.model.tokenizer import Tokenizer

    model = create_person_clip(arch=args.text_arch).eval()
    tokenizer = Tokenizer(model.config.context_length)
    default_threads = torch.get_num_threads()
    threads = thread_settings(args.threads)
    times: dict[int, list[float]] = {n: [] for n in threads}
    query = ["a woman wearing a red coat and black trousers"]
    encode_texts(model, tokenizer, query)  # warm-up
    for _ in range(args.repeats * 4):
        for n in threads:
            torch.set_num_threads(n)
            started = time.perf_counter()
            encode_texts(model, tokenizer, query)
            times[n].append(1000 * (time.perf_counter() - started))
    torch.set_num_threads(default_threads)
    return [{"measure": "text", "arch": args.text_arch, "threads": n, "ms_per_query_median": statistics.median(t)}
            for n, t in times.items()]


def write_images(folder: Path, count: int, height: int, width: int) -> list[Path]:
    """``count`` JPEG files of random coloured blocks (quality 90, like SketchPedes)."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    paths = []
    for i in range(count):
        blocks = torch.randint(0, 256, (height // 16, width // 16, 3), generator=generator, dtype=torch.uint8)
        pixels = blocks.repeat_interleave(16, 0).repeat_interleave(16, 1)
        noise = torch.randint(0, 24, pixels.shape, generator=generator, dtype=torch.uint8)
        path = folder / f"{i // 1000:03d}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels + noise).numpy()).save(path, quality=90)
        paths.append(path)
    return paths


def bench_indexing(args: argparse.Namespace) -> list[dict]:
    from PIL import Image

    from gadms_cli.data.transforms import eval_transform
    from gadms_cli.encode import encode_images
    from gadms_cli.model.factory import create_person_clip
    from gadms_cli.retrieve.fingerprint import model_fingerprint
    from gadms_cli.retrieve.gallery_index import update_index
    from gadms_cli.retrieve.retriever import default_workers

    model = create_person_clip(arch=args.arch).eval()
    transform = eval_transform(tuple(model.config.image_size))
    workers = default_workers() if args.workers is None else args.workers
    work = Path(tempfile.mkdtemp(prefix="gadms-bench-"))
    try:
        paths = sorted(write_images(work / "gallery", args.images, args.image_height, args.image_width))
        fingerprint = model_fingerprint(model)
        tensors = torch.stack([transform(Image.open(p)) for p in paths[: args.batch_size]])
        raw, indexed, unchanged, forward = [], [], [], []
        for repeat in range(args.repeats):
            started = time.perf_counter()
            encode_images(model, paths, transform, args.batch_size, workers)
            raw.append(len(paths) / (time.perf_counter() - started))

            index_root = work / f"index-{repeat}"
            _, report = update_index(model, work / "gallery", fingerprint=fingerprint, transform=transform,
                                     index_root=index_root, batch_size=args.batch_size, num_workers=workers)
            assert report.encoded == len(paths), report
            indexed.append(len(paths) / report.seconds)
            _, report = update_index(model, work / "gallery", fingerprint=fingerprint, transform=transform,
                                     index_root=index_root, batch_size=args.batch_size, num_workers=workers)
            assert report.encoded == 0
            unchanged.append(report.seconds)
            shutil.rmtree(index_root)

            with torch.no_grad():
                started = time.perf_counter()
                model.encode_image(tensors)
                forward.append(len(tensors) / (time.perf_counter() - started))
        raw_median, index_median = statistics.median(raw), statistics.median(indexed)
        return [{
            "measure": "indexing", "arch": args.arch, "images": len(paths),
            "image_size": f"{args.image_height}x{args.image_width}", "model_input": "x".join(map(str, model.config.image_size)),
            "batch_size": args.batch_size, "workers": workers, "threads": torch.get_num_threads(),
            "raw_images_per_s": raw_median, "index_images_per_s": index_median,
            "index_vs_raw": index_median / raw_median, "forward_only_images_per_s": statistics.median(forward),
            "unchanged_rerun_s": statistics.median(unchanged),
            "raw_all": [round(v, 1) for v in raw], "index_all": [round(v, 1) for v in indexed],
        }]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gallery-size", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--text-arch", default="ViT-B-16")
    parser.add_argument("--arch", default="gadms-small")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--image-height", type=int, default=384)
    parser.add_argument("--image-width", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: as gadms retrieve)")
    parser.add_argument("--threads", default="1,default", help="torch thread counts for search and text, e.g. 1,default")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-text", action="store_true")
    parser.add_argument("--skip-indexing", action="store_true")
    args = parser.parse_args()

    lines: list[dict] = []
    if not args.skip_search:
        lines += bench_search(args)
    if not args.skip_text:
        lines += bench_text(args)
    if not args.skip_indexing:
        lines += bench_indexing(args)
    print(json.dumps({"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_avg": os.getloadavg()}))
    for line in lines:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in line.items()}))


if __name__ == "__main__":
    main()

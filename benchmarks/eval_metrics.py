"""Time and peak memory of retrieval_metrics on an ICFG-PEDES-sized matrix.

ICFG-PEDES's test split: 19,848 text queries x 19,848 gallery images, 1,000 identities
(about 20 matches per query). Two score matrices (float32):

- ``trained``: unit embeddings (dim 64) drawn around one centre per identity, so the
  retrieval looks like a trained model's (R@1 about 80%, mAP about 45%; ICFG-PEDES models reach 69% / 42%);
- ``random``: uniform noise, the worst case (every query's last match is deep in the list).

Each is measured for ``gadms_cli.evaluate.retrieval_metrics`` and for the straightforward
IRRA-style computation (torch.argsort of the whole matrix, then cumulative sums over the
sorted match matrix; a stable sort so that both follow the same tie rule and must agree).

Time: median of ``--repeats`` calls, wall clock and CPU time of all threads (the steadier
figure when other work shares the cores). Peak memory: the process's peak
resident set size during the call minus its resident size just before (Linux: the peak
counter VmHWM is reset by writing 5 to /proc/self/clear_refs before each call). The
similarity matrix itself (1.5 GiB) exists before the call and is not counted.

Usage: ``python benchmarks/eval_metrics.py [--threads 2] [--repeats 3] [--kinds trained,random]``
Prints one JSON line per matrix kind.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gadms_cli.evaluate import retrieval_metrics

NUM_QUERIES = 19_848
NUM_GALLERY = 19_848
NUM_IDS = 1_000


def make_case(kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(similarity [Q, G] float32, query_ids [Q], gallery_ids [G])`` of the given kind."""
    rng = np.random.default_rng(seed)
    gallery_ids = np.sort(rng.integers(0, NUM_IDS, NUM_GALLERY))
    query_ids = gallery_ids[rng.permutation(NUM_GALLERY)][:NUM_QUERIES]  # one caption per image
    if kind == "random":
        return rng.random((NUM_QUERIES, NUM_GALLERY), dtype=np.float32), query_ids, gallery_ids
    if kind != "trained":
        raise ValueError(f"unknown matrix kind {kind!r}")
    dim = 64
    centres = rng.standard_normal((NUM_IDS, dim)).astype(np.float32)

    def embed(ids: np.ndarray) -> torch.Tensor:
        points = centres[ids] + 1.3 * rng.standard_normal((len(ids), dim)).astype(np.float32)
        return torch.nn.functional.normalize(torch.from_numpy(points), dim=1)

    similarity = (embed(query_ids) @ embed(gallery_ids).T).numpy()
    return similarity, query_ids, gallery_ids


def full_argsort_metrics(similarity: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray) -> dict:
    """The straightforward computation (IRRA's ``rank``): sort every row, then prefix sums."""
    sim = torch.from_numpy(similarity)
    q_ids = torch.from_numpy(query_ids)
    g_ids = torch.from_numpy(gallery_ids)
    order = torch.argsort(sim, dim=1, descending=True, stable=True)  # [Q, G] int64
    matches = g_ids[order] == q_ids[:, None]  # [Q, G] bool
    del order
    result = {f"R{k}": 100.0 * matches[:, :k].any(dim=1).float().mean().item() for k in (1, 5, 10)}
    found = matches.cumsum(dim=1)  # [Q, G] int64: matches seen up to each rank
    n_q = found[:, -1]
    position = torch.arange(1, sim.shape[1] + 1)
    ap = ((found / position) * matches).sum(dim=1) / n_q
    last_rank = sim.shape[1] - matches.flip(dims=[1]).int().argmax(dim=1)
    result["mAP"] = 100.0 * ap.mean().item()
    result["mINP"] = 100.0 * (n_q / last_rank).mean().item()
    return result


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(function: Callable[[], dict], repeats: int) -> tuple[dict, float, float, float]:
    """``(result, median wall seconds, median CPU seconds (all threads), peak RSS increase
    in MiB over the calls)``. CPU time is the steadier figure on a shared machine."""
    times, cpu_times, peaks = [], [], []
    result: dict = {}
    for _ in range(repeats):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before = _rss_kib()
        start, cpu_start = time.perf_counter(), time.process_time()
        result = function()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        peaks.append((_peak_rss_kib() - before) / 1024)
    return result, statistics.median(times), statistics.median(cpu_times), max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch and the row sorts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kinds", default="trained,random")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    for kind in args.kinds.split(","):
        similarity, query_ids, gallery_ids = make_case(kind)
        ours, ours_s, ours_cpu, ours_mib = measure(
            lambda: retrieval_metrics(similarity, query_ids, gallery_ids), args.repeats
        )
        line = {
            "benchmark": "retrieval_metrics",
            "matrix": f"{NUM_QUERIES}x{NUM_GALLERY} float32, {NUM_IDS} ids, {kind}",
            "threads": args.threads,
            "ours_seconds_median": round(ours_s, 3),
            "ours_cpu_seconds_median": round(ours_cpu, 3),
            "ours_peak_rss_increase_mib": round(ours_mib, 1),
            "metrics": {k: round(v, 4) if isinstance(v, float) else v for k, v in ours.items()},
        }
        if not args.skip_baseline:
            base, base_s, base_cpu, base_mib = measure(
                lambda: full_argsort_metrics(similarity, query_ids, gallery_ids), args.repeats
            )
            line["full_argsort_seconds_median"] = round(base_s, 3)
            line["full_argsort_cpu_seconds_median"] = round(base_cpu, 3)
            line["full_argsort_peak_rss_increase_mib"] = round(base_mib, 1)
            line["max_abs_difference"] = max(abs(ours[k] - base[k]) for k in base)
        print(json.dumps(line), flush=True)
        del similarity


if __name__ == "__main__":
    main()

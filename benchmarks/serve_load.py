"""Load test of ``gadms serve`` on loopback: requests/s, latency percentiles, errors; beside in-process search.

Makes (once) a SketchPedes gallery of ``--images`` pictures, starts ``gadms serve`` on it in a
separate process (the index is built first, not timed), then runs ``--clients`` concurrent
clients for ``--seconds``, each sending ``GET /api/search`` with attribute queries in turn
(``--explain`` adds the leave-one-out explanation to each). Reported: requests/s, p50/p90/p99
latency, errors. In the same run the same queries go through the in-process
:class:`gadms_cli.retrieve.Retriever` one at a time (median latency), so the cost of HTTP and
of queueing on the model is visible beside the search itself.

Usage::

    python benchmarks/serve_load.py [--model gadms-small] [--images 10000] [--clients 8] [--seconds 30] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

QUERIES = [
    "a woman wearing a red coat", "a man carrying a black backpack", "a person in blue jeans",
    "a woman with long black hair", "a man in a white t-shirt and gray trousers", "a person wearing a cap",
    "a woman in a pink dress with a handbag", "a man with short brown hair wearing a green jacket",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gadms-small", help="model folder or architecture (default: gadms-small, random weights)")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--explain", action="store_true", help="ask for the explanation with every search")
    parser.add_argument("--work", type=Path, default=Path("runs/serve-load"))
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as Markdown here")
    args = parser.parse_args()

    from gadms_cli.data.synth import SynthConfig, generate_sketchpedes
    from gadms_cli.retrieve import Retriever

    ids = args.images // 4
    data = args.work / f"sketchpedes-{args.images}"
    if not (data / "reid_raw.json").is_file():
        generate_sketchpedes(data, SynthConfig(train_ids=0, val_ids=0, test_ids=ids, height=192, width=64, seed=11, workers=2), overwrite=True)
    gallery = data / "imgs" / "test"

    port = free_port()
    env = dict(os.environ, GADMS_SERVE_TOKEN="")
    command = [sys.executable, "-m", "gadms_cli", "serve", "--gallery", str(gallery), "--model", args.model, "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        while True:
            if server.poll() is not None:
                raise SystemExit(f"gadms serve exited: {server.stdout.read()[-2000:]}")
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        index_seconds = time.monotonic() - started
        images = httpx.get(f"{url}/api/health").json()["images"]
        params = {"k": 10, "explain": 1 if args.explain else 0}
        with httpx.Client() as warm:  # one request per query first: thread pools, caches
            for query in QUERIES:
                warm.get(f"{url}/api/search", params={"q": query, **params}, timeout=60)

        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + args.seconds

        def client(number: int) -> None:
            with httpx.Client(timeout=60) as session:
                i = number
                while time.monotonic() < stop_at:
                    query = QUERIES[i % len(QUERIES)]
                    i += 1
                    sent = time.perf_counter()
                    try:
                        response = session.get(f"{url}/api/search", params={"q": query, **params})
                        ok = response.status_code == 200 and len(response.json()["results"]) == 10
                    except httpx.HTTPError as error:
                        ok, response = False, error
                    elapsed = time.perf_counter() - sent
                    with lock:
                        latencies.append(elapsed)
                        if not ok:
                            errors.append(str(getattr(response, "status_code", response)))

        load_started = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - load_started
    finally:
        server.terminate()
        server.wait(30)

    retriever = Retriever(args.model)
    retriever.index(gallery)
    for query in QUERIES:
        retriever.search(query, top_k=10, explain=args.explain)
    in_process = []
    for _ in range(5):
        for query in QUERIES:
            sent = time.perf_counter()
            retriever.search(query, top_k=10, explain=args.explain)
            in_process.append(time.perf_counter() - sent)

    ms = lambda seconds: f"{1000 * seconds:.1f}"  # noqa: E731
    rows = [
        ("gallery", f"{images:,} SketchPedes images (192x64), model {args.model}"),
        ("clients x duration", f"{args.clients} x {wall:.1f} s, `GET /api/search` k=10{' with explanation' if args.explain else ''}"),
        ("requests", f"{len(latencies):,} ({len(errors)} errors)"),
        ("throughput", f"{len(latencies) / wall:.1f} requests/s"),
        ("latency through HTTP", f"p50 {ms(percentile(latencies, 0.5))} ms, p90 {ms(percentile(latencies, 0.9))} ms, p99 {ms(percentile(latencies, 0.99))} ms"),
        ("in-process `Retriever.search`, one at a time", f"median {ms(statistics.median(in_process))} ms ({len(in_process)} searches)"),
        ("ratio: HTTP p50 under load / in-process median", f"{percentile(latencies, 0.5) / statistics.median(in_process):.1f}x"),
        ("server start to first answer (model load + index)", f"{index_seconds:.0f} s"),
    ]
    for name, value in rows:
        print(f"{name:50s} {value}")
    if args.out:
        text = [f"# `gadms serve` under load ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
                f"Command: `python benchmarks/serve_load.py {' '.join(sys.argv[1:])}`", "",
                f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, no GPU; server and clients on the same machine (loopback).", "",
                "| figure | value |", "|---|---|", *[f"| {name} | {value} |" for name, value in rows], ""]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text("\n".join(text))
        tmp.replace(args.out)
    if errors:
        raise SystemExit(f"{len(errors)} requests failed: {errors[:5]}")


if __name__ == "__main__":
    main()

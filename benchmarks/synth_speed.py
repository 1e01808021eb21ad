"""How fast `gadms synth` makes images, on one core, at 384x128 and 192x64.

Each run generates a complete small SketchPedes folder (identities, drawing,
JPEG encoding, atomic file writes, parquet shard, reid_raw.json,
attributes.jsonl) with one worker, in a fresh temporary folder. Prints one
JSON line per image size with the median images/s of the runs, both by wall
clock and by the process's own CPU time (user + system, which is what "per
core" means when other programs share the machine), and the 1-minute load
average so that a busy machine shows in the numbers.

    .venv/bin/python benchmarks/synth_speed.py [--runs 3] [--ids 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

from gadms_cli.data.synth import SynthConfig, generate_sketchpedes


def measure(height: int, width: int, ids: int, images_per_id: int, runs: int) -> dict:
    """Median images/s over ``runs`` generations of ``ids`` identities (80 % train, 10 % val, 10 % test)."""
    config = SynthConfig(
        train_ids=ids - 2 * (ids // 10), val_ids=ids // 10, test_ids=ids // 10, images_per_id=images_per_id, height=height, width=width, noise=0.2
    )
    images = ids * images_per_id
    wall, cpu = [], []
    with tempfile.TemporaryDirectory(prefix="synth-speed-") as root:
        generate_sketchpedes(os.path.join(root, "warmup"), SynthConfig(train_ids=2, val_ids=0, test_ids=0, height=height, width=width))
        for run in range(runs):
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            generate_sketchpedes(os.path.join(root, f"run{run}"), config)
            wall.append(images / (time.perf_counter() - wall_start))
            cpu.append(images / (time.process_time() - cpu_start))
    return {
        "benchmark": "synth_speed",
        "height": height,
        "width": width,
        "images_per_run": images,
        "workers": 1,
        "images_per_s_wall": round(statistics.median(wall), 1),
        "images_per_s_cpu": round(statistics.median(cpu), 1),
        "runs_wall": [round(v, 1) for v in wall],
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ids", type=int, default=100, help="identities per run (4 images each)")
    args = parser.parse_args()
    for height, width in ((384, 128), (192, 64)):
        print(json.dumps(measure(height, width, args.ids, 4, args.runs)), flush=True)


if __name__ == "__main__":
    main()

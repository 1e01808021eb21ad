"""How fast `gadms curate` goes on CPU, stage by stage, on SketchPedes images.

Two runs over a freshly generated SketchPedes train split (384x128 JPEGs), each through the
real pipeline (sources, decoding, filter, prompts, HTTP captioner with retries, validation,
parquet shards, manifest):

1. ``--detector none`` with the ``openai`` captioner against a local stub chat-completions
   server (http.server on 127.0.0.1, started here in its own process) that answers each prompt by filling its
   template with attribute words - template-following captions that pass validation. This
   measures every stage but detection; the caption figure is the client-side cost plus a stub
   that answers at once (``--server-latency`` adds a fixed delay per reply, e.g. to mimic vLLM).
2. Keypoint R-CNN (ResNet-50 FPN) with RANDOM weights (no trained weights can be downloaded
   here; the compute per image is the real one, the detections are meaningless) and the
   paper's filter rules, on the first ``--detect-images`` images, once per ``--min-size``
   (the shorter side inside the model: 128 is SketchPedes' native width, 800 the COCO setting).
   One detection per image is sent through the keypoint head (~4 GFLOPs each), as a trained
   model does for a photo of one person; the random scores then fail ``--min-score``.

Prints one JSON line per run with images/s per stage (wall clock), plus the 1-minute load
average so that a busy machine shows in the numbers (the detector runs also give the process's
CPU seconds per image, summed over torch's threads).

    .venv/bin/python benchmarks/curate_speed.py [--images 300] [--detect-images 8] [--min-size 128 800]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
from PIL import Image

from gadms_cli.curate.captioner_openai import OpenAICaptioner
from gadms_cli.curate.detectors import random_keypoint_rcnn
from gadms_cli.curate.pipeline import CurateSettings, curate
from gadms_cli.curate.report import STAGES
from gadms_cli.curate.templates import load_templates
from gadms_cli.data.synth import SynthConfig, generate_sketchpedes

WORDS = {
    "person": ["A young woman", "An older man", "A teenage boy", "A middle-aged woman"], "pronoun": ["She", "He"],
    "hair": ["short black hair", "long brown hair", "a grey ponytail"], "headwear": ["a grey cap", "a knitted hat"],
    "top": ["a white T-shirt", "a red sweater", "a striped shirt"], "outerwear": ["a navy jacket", "a beige coat"],
    "bottom": ["blue jeans", "black trousers", "a pleated skirt"], "shoes": ["white sneakers", "brown boots"],
    "belongings": ["a black backpack", "a red handbag"], "accessories": ["glasses", "a scarf"], "pose": ["walking", "standing"],
}  # fmt: skip


class StubHandler(BaseHTTPRequestHandler):
    """Answers a chat-completions request by filling the prompt's template, seeded by the request."""

    latency = 0.0

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"][-1]["text"]
        template = prompt.split("template:\n", 1)[1].split("\n", 1)[0]
        rng = random.Random(body.get("seed", 0))
        text = re.sub(r"\[(\w+)\]", lambda m: rng.choice(WORDS[m.group(1)]), template)
        if self.latency:
            time.sleep(self.latency)
        payload = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def serve(port_queue, latency: float) -> None:
    """Run the stub server (in its own process, so it does not share the pipeline's GIL)."""
    StubHandler.latency = latency
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubHandler)
    server.daemon_threads = True
    port_queue.put(server.server_port)
    server.serve_forever()


def stage_rates(result) -> dict:
    totals = result.run
    return {
        stage: {"items": totals.items[stage], "seconds": round(totals.seconds[stage], 3),
                "items_per_s": None if totals.per_second(stage) is None else float(f"{totals.per_second(stage):.3g}")}
        for stage in STAGES
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="SketchPedes images for the captioning run")
    parser.add_argument("--detect-images", type=int, default=8, help="images for each Keypoint R-CNN run")
    parser.add_argument("--min-size", type=int, nargs="*", default=[128, 800], help="Keypoint R-CNN shorter side(s)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--server-latency", type=float, default=0.0, help="seconds the stub waits before each reply")
    args = parser.parse_args()

    bank = load_templates()
    with tempfile.TemporaryDirectory(prefix="curate-speed-") as root_name:
        root = Path(root_name)
        ids = (args.images + 3) // 4
        generate_sketchpedes(root / "sp", SynthConfig(train_ids=ids, val_ids=0, test_ids=0, images_per_id=4))
        images = sorted((root / "sp" / "imgs" / "train").glob("*.jpg"))[: args.images]
        folder = root / "in"
        folder.mkdir()
        for path in images:
            os.link(path, folder / path.name)

        ports = multiprocessing.Queue()
        server = multiprocessing.Process(target=serve, args=(ports, args.server_latency), daemon=True)
        server.start()
        base_url = f"http://127.0.0.1:{ports.get(timeout=30)}/v1"
        captioner = OpenAICaptioner(base_url, "stub", concurrency=args.concurrency, timeout=30.0, retries=2)
        start = time.perf_counter()
        result = curate([str(folder)], CurateSettings(out=root / "captioned", shard_size=100), detector=None, captioner=captioner, templates=bank)
        wall = time.perf_counter() - start
        print(json.dumps({
            "benchmark": "curate_speed", "run": "detector none + openai stub", "images": result.run.images_in,
            "rows": result.run.rows, "captions_kept": result.run.captions_kept, "caption_requests": result.run.caption_requests,
            "captions_per_s": round(result.run.captions_per_second or 0.0, 1), "images_per_s_end_to_end": round(result.run.images_in / wall, 1),
            "concurrency": args.concurrency, "server_latency_s": args.server_latency, "stages": stage_rates(result),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }), flush=True)  # fmt: skip
        server.terminate()

        subset = root / "subset"
        subset.mkdir()
        for path in images[: args.detect_images]:
            os.link(path, subset / path.name)
        for min_size in args.min_size:
            # score_floor 0 + one detection per image: the keypoint head runs once per image, as for
            # a photo of one person with trained weights (random scores would otherwise skip it).
            detector = random_keypoint_rcnn(seed=0, min_size=min_size, max_size=max(1333, 3 * min_size), score_floor=0.0, max_detections=1)
            detector.detect([Image.open(images[0]).convert("RGB")])  # warm-up (first-call allocations)
            start, cpu_start = time.perf_counter(), time.process_time()
            result = curate([str(subset)], CurateSettings(out=root / f"detected-{min_size}", detect_batch=4),
                            detector=detector, captioner=captioner, templates=bank)  # fmt: skip
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            print(json.dumps({
                "benchmark": "curate_speed", "run": f"keypoint-rcnn RANDOM weights, min_size {min_size}", "images": result.run.images_in,
                "cpu_seconds_per_image": float(f"{cpu / result.run.images_in:.3g}"), "torch_threads": torch.get_num_threads(),
                "dropped": dict(result.run.dropped), "images_per_s_end_to_end": float(f"{result.run.images_in / wall:.3g}"),
                "stages": stage_rates(result), "load_avg_1m": round(os.getloadavg()[0], 2),
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

"""GA-DMS pretraining throughput and model FLOP utilisation (MFU) on one GPU; ``benchmarks/gpu.sh`` runs it.

For each batch size of ``--batches`` (ascending; the first out-of-memory ends the list)
it times one full optimiser step of the WebPerson pretraining recipe
(``recipes/webperson.yaml``: GA-DMS with cached scores and MTP, Adam with IRRA's
parameter groups) and of the plain ``clip`` SDM step on the same model, and reports:

- median step time (s) and throughput (samples/s; a sample is one image-caption pair);
- FLOPs per step, counted by ``torch.utils.flop_counter.FlopCounterMode`` over one
  forward + backward (matmuls, convolutions and attention; element-wise work and the
  optimiser are not counted, as usual for MFU). For GA-DMS this includes the GA-score
  pass (clean-caption text pass with taps + its gradient) and the MTP decoder: the
  work the method really does per step;
- achieved FLOP/s = FLOPs per step / median step time, and MFU = achieved / the GPU's
  peak dense bf16 FLOP/s (from :data:`PEAK_BF16_TFLOPS` by device name, or
  ``--peak-tflops``);
- peak GPU memory of the step.

Inputs are random tensors (images [B, 3, 384, 128], one 30-token caption repeated,
two captions per identity) and weights are random (no download): this measures the
model and method, not data loading. ``--report DIR`` turns the JSON this script wrote
plus ``train_step.py``'s JSON lines into ``gpu-benchmark.md`` (see gpu.sh).

    python benchmarks/gpu_throughput.py --json out/gpu-throughput.json            # ViT-B-16, cuda, bf16
    python benchmarks/gpu_throughput.py --device cpu --models gadms-tiny --batches 4 8 --steps 1 --warmup 1
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from gadms_cli.fileio import atomic_write
from gadms_cli.gadms.objective import RetrievalObjective
from gadms_cli.model.factory import create_person_clip
from gadms_cli.optim import build_optimizer
from gadms_cli.recipe import MethodRecipe, load_recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import make_batch, time_steps  # noqa: E402  (benchmarks/ is not a package)

# Peak dense (no sparsity) bf16 tensor-core throughput, TFLOP/s, from NVIDIA's data sheets.
# Checked in order: the first name fragment found in torch.cuda.get_device_name() wins.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4),  # same compute as H100 SXM (more and faster memory)
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM5 (e.g. "NVIDIA H100 80GB HBM3")
    ("GH200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.0),
)
THROUGHPUT_FILE = "gpu-throughput.json"
TRAIN_STEP_FILE = "gpu-train-step.jsonl"
REPORT_FILE = "gpu-benchmark.md"


def peak_bf16_tflops(device_name: str) -> float | None:
    """The assumed peak dense bf16 TFLOP/s of a device by its name, or None when unknown."""
    for fragment, tflops in PEAK_BF16_TFLOPS:
        if fragment.lower() in device_name.lower():
            return tflops
    return None


def count_step_flops(objective: RetrievalObjective, optimizer: torch.optim.Optimizer, batch: dict, device: str, amp: str | None) -> int:
    """FLOPs of one forward + backward of ``objective`` on ``batch`` (FlopCounterMode; the optimiser step is left out)."""
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp == "bf16"):
            loss = objective(batch)["loss"]
        loss.backward()
    optimizer.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def measure_step(model, method: MethodRecipe, optim, batch_size: int, steps: int, warmup: int, device: str, amp: str | None) -> dict:
    """Median step time, throughput, FLOPs per step and peak memory of one method at one batch size."""
    batch = make_batch(model, batch_size, device)
    objective = RetrievalObjective(model, method, num_captions=batch_size).to(device).train()
    optimizer = build_optimizer(model, optim)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = time_steps(objective, optimizer, batch, steps, warmup, amp, device)
    peak_memory = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    flops = count_step_flops(objective, optimizer, batch, device, amp)
    median = statistics.median(times)
    return {
        "median_step_s": round(median, 5),
        "samples_per_s": round(batch_size / median, 1),
        "flops_per_step": flops,
        "achieved_tflops": round(flops / median / 1e12, 3),
        "peak_memory_gib": None if peak_memory is None else round(peak_memory, 2),
    }


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA allocation failure, whether torch raised its own error type or cuBLAS reported it."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(
        text in str(error) for text in ("CUDA out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "out of memory")
    )


def release(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def measure_model(arch: str, batches: list[int], steps: int, warmup: int, device: str, amp: str | None, peak_tflops: float | None) -> dict:
    """Every batch size of ``batches`` until one does not fit, for GA-DMS (WebPerson recipe) and plain clip."""
    recipe = load_recipe("webperson")
    methods = {"gadms": recipe.method, "clip": MethodRecipe(name="clip")}
    torch.manual_seed(0)
    image_size = (384, 128) if arch.startswith("ViT") else None
    model = create_person_clip(arch=arch, image_size=image_size, with_mtp=True, device=device)
    results, out_of_memory_at = [], None
    for batch_size in sorted(batches):
        row: dict = {"batch": batch_size}
        try:
            for label, method in methods.items():
                row[label] = measure_step(model, method, recipe.optim, batch_size, steps, warmup, device, amp)
                release(device)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            if not is_out_of_memory(error):
                raise
            out_of_memory_at = batch_size
        model.zero_grad(set_to_none=True)
        release(device)
        if out_of_memory_at is not None:
            break
        row["step_ratio_gadms_vs_clip"] = round(row["gadms"]["median_step_s"] / row["clip"]["median_step_s"], 3)
        if peak_tflops:
            for label in methods:
                row[label]["mfu"] = round(row[label]["achieved_tflops"] / peak_tflops, 4)
        results.append(row)
    largest = results[-1] if results else None
    return {
        "model": arch,
        "image_size": list(model.config.image_size),
        "method": "gadms (recipes/webperson.yaml: score_timing cached, MTP, beta 0.4) vs clip (SDM only)",
        "batches": results,
        "out_of_memory_at": out_of_memory_at,
        "largest_batch": largest["batch"] if largest else None,
        "samples_per_s_at_largest": largest["gadms"]["samples_per_s"] if largest else None,
    }


def device_info(device: str, peak_tflops: float | None) -> dict:
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    return {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if device == "cuda" else None,
        "peak_bf16_tflops_assumed": peak_tflops,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --- the markdown report ------------------------------------------------------------------------


def _fmt(value, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def report(directory: Path) -> Path:
    """``gpu-benchmark.md`` in ``directory`` from ``gpu-throughput.json`` and ``gpu-train-step.jsonl`` (either may be missing)."""
    lines = ["# GPU benchmark: GA-DMS pretraining step on one GPU", ""]
    throughput_path = directory / THROUGHPUT_FILE
    if throughput_path.is_file():
        data = json.loads(throughput_path.read_text(encoding="utf-8"))
        info = data["machine"]
        peak = info["peak_bf16_tflops_assumed"]
        lines += [
            f"Made by `bash benchmarks/gpu.sh` on {info['date']}: {info['device']} ({_fmt(info['gpu_memory_gib'], '{:.0f}')} GiB), "
            f"torch {info['torch']}, CUDA {info['cuda']}, autocast {data['amp']}. Random weights and inputs (no data loading). "
            f"MFU assumes a peak of {_fmt(peak, '{:.1f}')} TFLOP/s dense bf16 (NVIDIA data sheet for this GPU); "
            "FLOPs per step are counted by torch's FlopCounterMode over forward + backward.",
            "",
        ]
        for model in data["models"]:
            lines += [
                f"## {model['model']} at {model['image_size'][0]}x{model['image_size'][1]}",
                "",
                f"Method: {model['method']}. Largest batch that fits: **{model['largest_batch']}** "
                f"({_fmt(model['samples_per_s_at_largest'], '{:.0f}')} samples/s with GA-DMS)"
                + (f"; batch {model['out_of_memory_at']} ran out of memory." if model["out_of_memory_at"] else "."),
                "",
                "| batch | GA-DMS step s | GA-DMS samples/s | GA-DMS TFLOP/step | GA-DMS MFU | clip step s | clip samples/s | clip MFU | GA-DMS / clip | peak GiB |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for row in model["batches"]:
                g, c = row["gadms"], row["clip"]
                lines.append(
                    f"| {row['batch']} | {g['median_step_s']:.3f} | {g['samples_per_s']:.0f} | {g['flops_per_step'] / 1e12:.2f} "
                    f"| {_fmt(g.get('mfu'), '{:.1%}')} | {c['median_step_s']:.3f} | {c['samples_per_s']:.0f} "
                    f"| {_fmt(c.get('mfu'), '{:.1%}')} | {row['step_ratio_gadms_vs_clip']:.2f} | {_fmt(g['peak_memory_gib'])} |"
                )
            lines.append("")
    steps_path = directory / TRAIN_STEP_FILE
    if steps_path.is_file():
        lines += [
            "## GA-DMS vs plain step (`benchmarks/train_step.py`)",
            "",
            "| model | batch | clip s | GA-DMS online s | GA-DMS cached s | online / clip | cached / clip |",
            "|---|---|---|---|---|---|---|",
        ]
        for raw in steps_path.read_text(encoding="utf-8").splitlines():
            if not raw.strip().startswith("{"):
                continue
            r = json.loads(raw)
            m = r["median_step_s"]
            lines.append(
                f"| {r['model']} | {r['batch']} | {m['clip']:.3f} | {m['gadms_online']:.3f} | {m['gadms_cached']:.3f} "
                f"| {r['ratio_online_vs_clip']:.2f} | {r['ratio_cached_vs_clip']:.2f} |"
            )
        lines.append("")
    target = directory / REPORT_FILE
    with atomic_write(target) as handle:
        handle.write("\n".join(lines))
    return target


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ViT-B-16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 128, 256, 512], help="batch sizes to try, ascending")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda", help="cuda (the measurement) or cpu (a dry run with a tiny --models)")
    parser.add_argument("--amp", choices=["bf16", "none"], default="bf16")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s of the device (default: by name)")
    parser.add_argument("--json", type=Path, default=None, help=f"write the results here (e.g. $OUT/{THROUGHPUT_FILE})")
    parser.add_argument("--report", type=Path, default=None, metavar="DIR", help=f"only write DIR/{REPORT_FILE} from earlier results")
    args = parser.parse_args(argv)
    if args.report is not None:
        print(f"report: {report(args.report)}")
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no GPU; pass --device cpu for a dry run")
    amp = None if args.amp == "none" else args.amp
    peak = args.peak_tflops
    if peak is None and args.device == "cuda":
        peak = peak_bf16_tflops(torch.cuda.get_device_name(0))
    result = {"amp": amp or "fp32", "machine": device_info(args.device, peak), "models": []}
    for arch in args.models:
        model_result = measure_model(arch, args.batches, args.steps, args.warmup, args.device, amp, peak)
        result["models"].append(model_result)
        print(json.dumps(model_result), flush=True)
    if args.json:
        with atomic_write(args.json) as handle:
            json.dump(result, handle, indent=1)
        print(f"results: {args.json}")


if __name__ == "__main__":
    main()

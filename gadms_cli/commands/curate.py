"""``gadms curate``: web image-text data -> WebPerson-style person-centric pairs (docs/curate.md).

Two commands in one group:

* ``gadms curate INPUT... --out DIR`` (also spelled ``gadms curate run INPUT...``): filter,
  crop, caption, write shards; resumable.
* ``gadms curate templates CAPTIONS... --out FILE``: derive caption templates with an LLM.

Click groups cannot take positional arguments before a sub-command name, so the group class
below routes anything that is not a sub-command name (``run``, ``templates``) or ``--help`` to
``run``. An input folder literally named ``run`` or ``templates`` is passed as ``./run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from typer.core import TyperGroup

from gadms_cli.commands.common import cli_command, console, err_console
from gadms_cli.curate.person_filter import FilterRules

_RULES = FilterRules()  # the filter's defaults (the paper's) are the library's, written once


class _RunByDefault(TyperGroup):
    """A group whose default sub-command is ``run``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    name="curate",
    cls=_RunByDefault,
    help=(
        "Turn web image-text data into WebPerson-style person-centric pairs.\n\n"
        "gadms curate INPUT... --out DIR  is short for  gadms curate run INPUT... --out DIR."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

_DETECTOR = "Detector and filter"
_CAPTIONER = "Captioner"
_RUN = "Run"

# Captioner options shared by `run` and `templates`.
_captioner_opt = typer.Option("openai", "--captioner", help="openai (an OpenAI-compatible server, e.g. vLLM) or transformers (a local model).", rich_help_panel=_CAPTIONER)
_model_opt = typer.Option(..., "--model", help="Model name on the server (openai) or a local folder / Hub id (transformers).", rich_help_panel=_CAPTIONER)
_base_url_opt = typer.Option("http://127.0.0.1:8000/v1", "--base-url", help="The server's OpenAI API root (openai).", rich_help_panel=_CAPTIONER)
_api_key_env_opt = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Environment variable holding the API key (openai; never printed or stored).", rich_help_panel=_CAPTIONER)
_concurrency_opt = typer.Option(8, "--concurrency", help="Requests in flight at once (openai).", rich_help_panel=_CAPTIONER)
_timeout_opt = typer.Option(120.0, "--timeout", help="Seconds to wait for one reply (openai).", rich_help_panel=_CAPTIONER)
_retries_opt = typer.Option(4, "--retries", help="Retries of a failed request, with exponential backoff (openai).", rich_help_panel=_CAPTIONER)
_max_tokens_opt = typer.Option(200, "--max-tokens", help="Longest reply, in tokens.", rich_help_panel=_CAPTIONER)
_temperature_opt = typer.Option(0.7, "--temperature", help="Sampling temperature (0: greedy).", rich_help_panel=_CAPTIONER)
_top_p_opt = typer.Option(0.9, "--top-p", help="Nucleus sampling mass.", rich_help_panel=_CAPTIONER)
_device_opt = typer.Option("auto", "--device", help="auto, cpu or cuda[:N] (detector and transformers captioner).")
_batch_size_opt = typer.Option(8, "--batch-size", help="Images per detector call and requests per transformers batch.")
_seed_opt = typer.Option(0, "--seed", help="Seed of every random choice (templates, sampling); same seed, same output.", rich_help_panel=_RUN)


def _captioner(kind, model, base_url, api_key_env, concurrency, timeout, retries, max_tokens, temperature, top_p, batch_size, device):
    from gadms_cli.curate.captioner_factory import build_captioner
    from gadms_cli.curate.captioners import GenerationSettings

    generation = GenerationSettings(max_tokens=max_tokens, temperature=temperature, top_p=top_p)
    return build_captioner(
        kind, model, generation=generation, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency,
        timeout=timeout, retries=retries, batch_size=batch_size, device=device,
    )  # fmt: skip


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _print_report(result) -> None:
    from gadms_cli.curate.report import STAGES

    run = result.run
    table = Table(title=f"this run: {result.units_done_now} unit(s) processed, {result.units_skipped} already finished", title_justify="left")
    for header in ("stage", "items", "seconds", "items/s"):
        table.add_column(header, justify="left" if header == "stage" else "right")
    for stage in STAGES:
        table.add_row(stage, f"{run.items[stage]:,}", f"{run.seconds[stage]:,.1f}", _rate(run.per_second(stage)))
    console.print(table)
    console.print(
        f"captions: {run.captions_kept:,} kept of {run.caption_requests:,} asked ({_rate(run.captions_per_second)} kept captions/s)"
    )
    total = result.all_units
    console.print(f"kept: {total.rows:,} person images from {total.images_in:,} input images (all finished units)")
    if total.dropped:
        console.print("dropped: " + ", ".join(f"{reason} {count:,}" for reason, count in sorted(total.dropped.items())))
    if total.caption_rejections:
        console.print("caption rejections: " + ", ".join(f"{reason} {count:,}" for reason, count in sorted(total.caption_rejections.items())))
    state = "complete" if result.complete else f"{total.units}/{result.units_total} units finished (other machines or a resume still to run)"
    console.print(f"{result.out}: {state}; manifest.json written")


@app.command("run")
@cli_command
def run(
    inputs: List[str] = typer.Argument(..., metavar="INPUT", help="Image folders, img2dataset .tar/.parquet shards (or their folder), WebPerson parquet."),
    out: Path = typer.Option(..., "--out", help="Output folder (new or empty; or an earlier run's, to resume it)."),
    detector: str = typer.Option("keypoint-rcnn", "--detector", help="keypoint-rcnn, yolo (needs ultralytics) or none (keep every image whole).", rich_help_panel=_DETECTOR),
    detector_weights: Optional[Path] = typer.Option(None, "--detector-weights", help="Detector weights file (default for keypoint-rcnn: torchvision's cache).", rich_help_panel=_DETECTOR),
    detector_min_size: int = typer.Option(800, "--detector-min-size", help="Shorter image side (px) inside Keypoint R-CNN.", rich_help_panel=_DETECTOR),
    detector_max_size: int = typer.Option(1333, "--detector-max-size", help="Longest image side (px) inside Keypoint R-CNN.", rich_help_panel=_DETECTOR),
    min_score: float = typer.Option(_RULES.min_score, "--min-score", help="A person's box confidence must be above this.", rich_help_panel=_DETECTOR),
    min_short_side: float = typer.Option(_RULES.min_short_side, "--min-short-side", help="The box's shorter side must be above this (px).", rich_help_panel=_DETECTOR),
    min_aspect: float = typer.Option(_RULES.min_aspect, "--min-aspect", help="Lowest box height:width.", rich_help_panel=_DETECTOR),
    max_aspect: float = typer.Option(_RULES.max_aspect, "--max-aspect", help="Highest box height:width.", rich_help_panel=_DETECTOR),
    min_keypoints: int = typer.Option(_RULES.min_keypoints, "--min-keypoints", help="Fewest visible COCO keypoints.", rich_help_panel=_DETECTOR),
    min_hip_keypoints: int = typer.Option(_RULES.min_hip_keypoints, "--min-hip-keypoints", help="Fewest visible hips.", rich_help_panel=_DETECTOR),
    min_head_keypoints: int = typer.Option(_RULES.min_head_keypoints, "--min-head-keypoints", help="Fewest visible head keypoints (nose, eyes, ears).", rich_help_panel=_DETECTOR),
    keypoint_threshold: float = typer.Option(_RULES.keypoint_threshold, "--keypoint-threshold", help="Confidence (0..1) at which a keypoint counts as visible.", rich_help_panel=_DETECTOR),
    max_persons: int = typer.Option(_RULES.max_persons, "--max-persons", help="Most persons (score >= --count-score) an image may hold.", rich_help_panel=_DETECTOR),
    count_score: float = typer.Option(_RULES.count_score, "--count-score", help="Detections scoring this or more count as persons for --max-persons.", rich_help_panel=_DETECTOR),
    crop: str = typer.Option(_RULES.crop, "--crop", help="box: cut out each kept person (with --margin); image: keep the whole image.", rich_help_panel=_DETECTOR),
    margin: float = typer.Option(_RULES.margin, "--margin", help="Crop margin, a fraction of the box's width/height per side.", rich_help_panel=_DETECTOR),
    captioner: str = _captioner_opt,
    model: str = _model_opt,
    base_url: str = _base_url_opt,
    api_key_env: str = _api_key_env_opt,
    concurrency: int = _concurrency_opt,
    timeout: float = _timeout_opt,
    retries: int = _retries_opt,
    max_tokens: int = _max_tokens_opt,
    temperature: float = _temperature_opt,
    top_p: float = _top_p_opt,
    templates: Optional[Path] = typer.Option(None, "--templates", help="Template bank file (default: the 215 shipped templates).", rich_help_panel=_CAPTIONER),
    caption_attempts: int = typer.Option(3, "--caption-attempts", help="Tries per caption before the person is dropped.", rich_help_panel=_CAPTIONER),
    min_words: int = typer.Option(8, "--min-words", help="Shortest accepted caption, in words.", rich_help_panel=_CAPTIONER),
    max_words: int = typer.Option(100, "--max-words", help="Longest accepted caption, in words.", rich_help_panel=_CAPTIONER),
    shard_size: int = typer.Option(1000, "--shard-size", help="Images (folders) or rows (parquet) per output shard; one shard per .tar.", rich_help_panel=_RUN),
    num_shards: int = typer.Option(1, "--num-shards", help="Machines sharing the work.", rich_help_panel=_RUN),
    shard_index: int = typer.Option(0, "--shard-index", help="This machine's index, 0..num-shards-1.", rich_help_panel=_RUN),
    seed: int = _seed_opt,
    jpeg_quality: int = typer.Option(95, "--jpeg-quality", help="JPEG quality of crops.", rich_help_panel=_RUN),
    device: str = _device_opt,
    batch_size: int = _batch_size_opt,
) -> None:
    """Filter persons, crop, caption twice with templates, write WebPerson shards (resumable)."""
    from gadms_cli.curate.detectors import build_detector
    from gadms_cli.curate.person_filter import FilterRules
    from gadms_cli.curate.pipeline import CurateSettings, curate
    from gadms_cli.curate.templates import load_templates
    from gadms_cli.curate.validation import CaptionRules
    from gadms_cli.errors import GadmsError

    rules = FilterRules(
        min_score=min_score, min_short_side=min_short_side, min_aspect=min_aspect, max_aspect=max_aspect,
        min_keypoints=min_keypoints, min_hip_keypoints=min_hip_keypoints, min_head_keypoints=min_head_keypoints,
        keypoint_threshold=keypoint_threshold, max_persons=max_persons, count_score=count_score, crop=crop, margin=margin,
    )  # fmt: skip
    settings = CurateSettings(
        out=out, rules=rules, caption_rules=CaptionRules(min_words=min_words, max_words=max_words), shard_size=shard_size,
        seed=seed, caption_attempts=caption_attempts, detect_batch=batch_size, jpeg_quality=jpeg_quality,
        num_shards=num_shards, shard_index=shard_index,
    )  # fmt: skip
    problem = settings.problem()
    if problem is not None:
        raise GadmsError(problem)
    bank = load_templates(templates)
    chosen_detector = build_detector(
        detector, detector_weights, device=device, score_floor=min(count_score, min_score),
        min_size=detector_min_size, max_size=detector_max_size,
    )  # fmt: skip
    chosen_captioner = _captioner(
        captioner, model, base_url, api_key_env, concurrency, timeout, retries, max_tokens, temperature, top_p, batch_size, device
    )
    result = curate(inputs, settings, detector=chosen_detector, captioner=chosen_captioner, templates=bank)
    _print_report(result)
    if result.run.caption_requests and not result.run.captions_kept:
        raise GadmsError(
            f"no caption was kept of {result.run.caption_requests:,} asked (see the caption rejections above); "
            "check --model and --templates, or loosen --min-words / --max-words"
        )


@app.command("templates")
@cli_command
def templates_command(
    captions: List[str] = typer.Argument(..., metavar="CAPTIONS", help="Caption sources: .txt (one per line), benchmark folders (train split), WebPerson."),
    out: Path = typer.Option(..., "--out", help="Template file to write (the --templates format)."),
    count: int = typer.Option(200, "--count", help="Templates wanted."),
    exclude: Optional[Path] = typer.Option(None, "--exclude", help="A template file whose templates are not repeated (e.g. the bank to extend)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    captioner: str = _captioner_opt,
    model: str = _model_opt,
    base_url: str = _base_url_opt,
    api_key_env: str = _api_key_env_opt,
    concurrency: int = _concurrency_opt,
    timeout: float = _timeout_opt,
    retries: int = _retries_opt,
    max_tokens: int = _max_tokens_opt,
    temperature: float = _temperature_opt,
    top_p: float = _top_p_opt,
    seed: int = _seed_opt,
    device: str = _device_opt,
    batch_size: int = _batch_size_opt,
) -> None:
    """Derive caption templates from existing captions with an LLM (same backends as captioning)."""
    from gadms_cli.curate.derive_templates import derive_templates, read_captions
    from gadms_cli.curate.templates import format_templates, load_templates
    from gadms_cli.errors import GadmsError
    from gadms_cli.fileio import atomic_write

    if out.exists() and not overwrite:
        raise GadmsError(f"--out {out} exists; pass --overwrite to replace it or choose another file")
    excluded = load_templates(exclude) if exclude is not None else None
    texts = read_captions(captions)
    chosen = _captioner(captioner, model, base_url, api_key_env, concurrency, timeout, retries, max_tokens, temperature, top_p, batch_size, device)
    result = derive_templates(texts, chosen, count=count, seed=seed, batch_size=max(batch_size, concurrency) * 4, exclude=excluded)
    if len(result.templates) < 2:
        raise GadmsError(
            f"only {len(result.templates)} usable template(s) from {result.captions_sent} captions "
            f"({', '.join(f'{k} {v}' for k, v in sorted(result.rejections.items())) or 'no answers'}); try another --model"
        )
    header = [
        f"{len(result.templates)} templates derived by 'gadms curate templates' from {result.captions_sent} captions",
        f"of {', '.join(Path(c).name for c in captions)} with {chosen.backend}:{chosen.model_name} (seed {seed}); review before use",
    ]
    with atomic_write(out) as handle:
        handle.write(format_templates(result.templates, header))
    load_templates(out)  # the file must load as a bank
    console.print(f"wrote {len(result.templates)} templates to {out} from {result.captions_sent:,} captions")
    if result.rejections:
        console.print("dropped answers: " + ", ".join(f"{k} {v:,}" for k, v in sorted(result.rejections.items())))
    if len(result.templates) < count:
        err_console.print(f"[yellow]warning:[/] asked for {count} templates, found {len(result.templates)}; pass more captions")

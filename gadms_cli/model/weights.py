"""Reading weight files safely and loading CLIP weights into a model of another size.

- :func:`read_state_dict` reads ``.safetensors`` or a torch file with
  ``torch.load(weights_only=True)`` (never a full unpickle), unwraps the usual
  containers (``{"state_dict": ...}``, ``{"model": ...}``) and strips the
  ``module.`` prefix of data-parallel training.
- :func:`load_clip_state` loads an open_clip/OpenAI-named CLIP state dict into
  ``model.clip``, resizing the visual position grid (bilinear) and the text
  positions (see pos_embed.py) when the model's image size or context differs.
- :class:`LoadReport` says what was loaded, what was missing or unexpected and
  how the weights were adapted; the CLI prints it.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from gadms_cli.errors import GadmsError, one_line_reason
from gadms_cli.model.pos_embed import adapt_text_pos_embed, resize_visual_pos_embed, square_grid


@dataclass
class LoadReport:
    """Where a model's weights came from and how well they fitted."""

    source: str  # a path, an open_clip tag or "random init"
    kind: str  # "random init" | "open_clip tag" | "weights file" | "gadms checkpoint" | "irra checkpoint"
    loaded: int = 0  # tensors copied into the model
    missing: list[str] = field(default_factory=list)  # model keys the source did not provide (left at init)
    unexpected: list[str] = field(default_factory=list)  # source keys the model has no place for (ignored)
    notes: list[str] = field(default_factory=list)  # adaptations: resized grids, dtype casts, inferred sizes
    warnings: list[str] = field(default_factory=list)  # likely mistakes (printed as warnings)

    def summary(self) -> str:
        """One line: kind, source, counts."""
        return (
            f"{self.kind}: {self.source} ({self.loaded} tensors loaded, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected)"
        )

    def lines(self, max_keys: int = 10) -> list[str]:
        """Human-readable lines: the summary, the notes, and up to ``max_keys`` keys per list."""
        out = [self.summary()] + [f"note: {n}" for n in self.notes] + [f"warning: {w}" for w in self.warnings]
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                shown = ", ".join(keys[:max_keys]) + (f" ... (+{len(keys) - max_keys})" if len(keys) > max_keys else "")
                out.append(f"{label}: {shown}")
        return out


def _is_tensor_dict(value: object) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key that has it (e.g. ``module.``)."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors, or torch.load(weights_only=True) of a .pt/.pth/.bin.

    A dict wrapping the weights under ``state_dict`` or ``model`` is unwrapped; a
    leading ``module.`` is stripped. Raises :class:`GadmsError` (one line) when
    the file is missing, unreadable, or needs a full unpickle to open.
    """
    path = Path(path)
    if not path.is_file():
        raise GadmsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            raw: object = load_file(str(path), device="cpu")
        except Exception as error:  # safetensors raises its own error types
            reason = type(error).__name__
            raise GadmsError(f"{path}: not a readable safetensors file ({reason}); re-download or re-save it") from None
    else:
        try:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
            if found is None:
                detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(error))
                reason = detail.group(1).strip() if detail else type(error).__name__
                raise GadmsError(
                    f"{path}: not a readable torch weights file ({reason}); re-download or re-save it"
                ) from None
            raise GadmsError(
                f"{path}: refusing to unpickle it: it stores the Python object {found.group(1)}, which "
                "torch.load(weights_only=True) does not load; on a machine you trust, re-save only the tensors: "
                "torch.save({'model': torch.load(P, weights_only=False)['model']}, 'clean.pth')"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as error:
            raise GadmsError(
                f"{path}: not a readable torch weights file ({one_line_reason(error)}); re-download or re-save it"
            ) from None
    for key in ("state_dict", "model"):
        if isinstance(raw, dict) and _is_tensor_dict(raw.get(key)):
            raw = raw[key]
            break
    if not _is_tensor_dict(raw):
        raise GadmsError(f"{path}: holds no state dict of tensors (looked at the top level, 'state_dict' and 'model')")
    state_dict: dict[str, torch.Tensor] = dict(raw)  # type: ignore[arg-type]
    if all(k.startswith("module.") for k in state_dict):
        state_dict = strip_prefix(state_dict, "module.")
    return state_dict


def visual_grid_of(clip: nn.Module) -> tuple[int, int] | None:
    """The patch grid (rows, cols) of a ViT image tower, or None for other towers."""
    grid = getattr(clip.visual, "grid_size", None)
    return (int(grid[0]), int(grid[1])) if grid is not None else None


def load_clip_state(
    clip: nn.Module,
    state_dict: dict[str, torch.Tensor],
    report: LoadReport,
    source_grid: tuple[int, int] | None = None,
    prefix_in_report: str = "",
) -> None:
    """Copy an open_clip-named CLIP ``state_dict`` into ``clip``, adapting sizes (see module doc).

    ``source_grid`` is the patch grid the weights were trained at; when it is
    None or does not fit the tensor, a square grid is assumed (every
    open_clip/OpenAI release). Floating tensors are cast to the
    model's dtype. Shape mismatches other than position embeddings raise a
    :class:`GadmsError`; missing and unexpected keys go into ``report``.
    """
    state = dict(state_dict)
    for key in ("input_resolution", "context_length", "vocab_size"):  # OpenAI JIT archive extras
        state.pop(key, None)
    target = clip.state_dict()

    key = "visual.positional_embedding"
    if (
        key in state
        and key in target
        and state[key].shape != target[key].shape
        and state[key].shape[1] == target[key].shape[1]
    ):
        old = state[key]
        num_patches = old.shape[0] - 1
        fits = source_grid is not None and source_grid[0] * source_grid[1] == num_patches
        grid = source_grid if fits else square_grid(num_patches)
        new_grid = visual_grid_of(clip)
        if grid is None or new_grid is None:
            raise GadmsError(
                f"{report.source}: cannot tell the patch grid of a {num_patches}-patch position embedding; "
                "build the model at the size the weights were trained at"
            )
        state[key] = resize_visual_pos_embed(old, grid, new_grid)
        report.notes.append(
            f"visual position grid resized {grid[0]}x{grid[1]} -> {new_grid[0]}x{new_grid[1]} (bilinear)"
        )

    key = "positional_embedding"
    if key in state and key in target and state[key].shape[0] != target[key].shape[0]:
        old_length = state[key].shape[0]
        state[key] = adapt_text_pos_embed(state[key], target[key].shape[0])
        how = "truncated" if target[key].shape[0] < old_length else "interpolated"
        report.notes.append(f"text positions {how} {old_length} -> {target[key].shape[0]}")

    for name in ("logit_scale", "logit_bias"):
        if name in state and name in target and state[name].shape != target[name].shape:
            state[name] = state[name].reshape(target[name].shape)
    if "logit_bias" in state and "logit_bias" not in target:
        state.pop("logit_bias")

    load_module_state(clip, state, report, prefix_in_report)


def load_module_state(
    module: nn.Module, state_dict: dict[str, torch.Tensor], report: LoadReport, prefix_in_report: str
) -> None:
    """Copy ``state_dict`` into ``module`` (non-strict): same shapes required, floats cast to the model's dtype.

    Missing and unexpected keys are added to ``report`` (prefixed with ``prefix_in_report``)."""
    target = module.state_dict()
    mismatched = [k for k in state_dict if k in target and state_dict[k].shape != target[k].shape]
    if mismatched:
        k = mismatched[0]
        raise GadmsError(
            f"{report.source}: weights do not fit this architecture ({len(mismatched)} shape mismatches, "
            f"e.g. {prefix_in_report}{k}: {tuple(state_dict[k].shape)} vs model {tuple(target[k].shape)}); "
            "pick the architecture they were trained with"
        )
    casts = {
        str(v.dtype) for k, v in state_dict.items() if k in target and v.is_floating_point() and v.dtype != target[k].dtype
    }
    note = f"cast {', '.join(sorted(casts))} -> {next(iter(target.values())).dtype}"
    if casts and note not in report.notes:
        report.notes.append(note)
    state = {k: v.to(target[k].dtype) if k in target and v.is_floating_point() else v for k, v in state_dict.items()}
    result = module.load_state_dict(state, strict=False)
    report.loaded += len([k for k in state if k in target])
    report.missing += [prefix_in_report + k for k in result.missing_keys]
    report.unexpected += [prefix_in_report + k for k in result.unexpected_keys]

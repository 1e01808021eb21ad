"""The captioner a command line names: ``--captioner openai|transformers`` and its flags.

Kept apart from :mod:`gadms_cli.curate.captioners` (the interface both backends import) so that
the backends and their factory import top-down, without a circle.
"""

from __future__ import annotations

from gadms_cli.curate.captioner_openai import OpenAICaptioner
from gadms_cli.curate.captioner_transformers import TransformersCaptioner
from gadms_cli.curate.captioners import Captioner, GenerationSettings
from gadms_cli.errors import GadmsError

CAPTIONERS: tuple[str, ...] = ("openai", "transformers")


def build_captioner(
    kind: str,
    model: str,
    *,
    generation: GenerationSettings,
    base_url: str = "http://127.0.0.1:8000/v1",
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 8,
    timeout: float = 120.0,
    retries: int = 4,
    batch_size: int = 8,
    device: str = "auto",
) -> Captioner:
    """The captioner named by ``--captioner``, configured from the command-line flags."""
    problem = generation.problem()
    if problem is not None:
        raise GadmsError(problem)
    if kind == "openai":
        return OpenAICaptioner(
            base_url, model, generation=generation, api_key_env=api_key_env, concurrency=concurrency, timeout=timeout, retries=retries
        )
    if kind == "transformers":
        return TransformersCaptioner(model, generation=generation, batch_size=batch_size, device=device)
    raise GadmsError(f"--captioner must be one of {', '.join(CAPTIONERS)}, got {kind!r}")

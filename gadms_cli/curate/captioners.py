"""Captioning models behind one interface: (prompt, image, seed) requests in, text replies out.

Backends (each in its own module; :func:`gadms_cli.curate.captioner_factory.build_captioner` picks one):

* ``openai`` (:mod:`gadms_cli.curate.captioner_openai`): any OpenAI-compatible chat-completions
  endpoint, e.g. vLLM serving Qwen2.5-VL as in the paper. Best for large runs: the server
  batches across requests, gadms sends ``--concurrency`` requests at a time.
* ``transformers`` (:mod:`gadms_cli.curate.captioner_transformers`): a local image-text-to-text
  model through ``AutoProcessor`` + ``AutoModelForImageTextToText``, in batches.

Both are used for captions (with an image) and for ``gadms curate templates`` (text only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from gadms_cli.curate.prompts import Prompt


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings shared by the backends (``temperature`` 0 means greedy decoding)."""

    max_tokens: int = 200
    temperature: float = 0.7
    top_p: float = 0.9

    def problem(self) -> str | None:
        if self.max_tokens < 1:
            return f"--max-tokens must be 1 or more, got {self.max_tokens}"
        if self.temperature < 0:
            return f"--temperature must be 0 or more, got {self.temperature}"
        if not 0 < self.top_p <= 1:
            return f"--top-p must be in (0, 1], got {self.top_p}"
        return None


@dataclass(frozen=True)
class ChatRequest:
    """One generation: the prompt, an encoded image (JPEG/PNG bytes) or None for text only, a seed."""

    prompt: Prompt
    image: bytes | None
    seed: int


@dataclass(frozen=True)
class ChatReply:
    """The model's text, or why there is none.

    ``problem`` is None for a usable reply; ``"truncated"`` (text cut at the token limit),
    ``"malformed_reply"`` (no text in the server's answer, even after retries) or
    ``"server_rejected"`` (the server refused this request, ``detail`` says why).
    """

    text: str | None
    problem: str | None = None
    detail: str = ""


class Captioner(Protocol):
    """Generates text for chat requests, in the order given.

    ``backend`` and ``model_name`` go into the output's ``captioner_model`` column;
    ``identity`` holds the settings that shape the output (a resumed run checks them).
    Unrecoverable problems (server unreachable after retries, bad API key) raise GadmsError.
    """

    backend: str
    model_name: str

    @property
    def identity(self) -> dict: ...

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]: ...

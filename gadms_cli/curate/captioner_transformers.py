"""The ``transformers`` captioner: a local image-text-to-text model, run in batches.

Any model that ``AutoProcessor`` and ``AutoModelForImageTextToText`` load and whose processor
has a chat template (Qwen2-VL, Qwen2.5-VL, LLaVA, Idefics, SmolVLM, Gemma 3 ...). ``--model``
is a local folder (``save_pretrained`` layout) or a Hub id (downloaded by transformers when
online). Requests are grouped in batches of ``--batch-size`` in the order given, left-padded
and decoded with ``generate``. Sampling is seeded per batch (from the requests' seeds), so the
same requests in the same batches give the same text.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from gadms_cli.curate.captioners import ChatReply, ChatRequest, GenerationSettings
from gadms_cli.curate.detectors import resolve_device
from gadms_cli.errors import GadmsError


def chat_messages(request: ChatRequest) -> list[dict]:
    """The request as Hugging Face chat messages (content parts; an image part when there is an image)."""
    user: list[dict] = [{"type": "image"}] if request.image is not None else []
    user.append({"type": "text", "text": request.prompt.user})
    return [
        {"role": "system", "content": [{"type": "text", "text": request.prompt.system}]},
        {"role": "user", "content": user},
    ]


def batch_seed(requests: Sequence[ChatRequest]) -> int:
    """One seed for a batch, from its requests' seeds (CRC-32 of their list)."""
    return zlib.crc32(",".join(str(request.seed) for request in requests).encode("ascii"))


class TransformersCaptioner:
    """A processor + image-text-to-text model pair on one device."""

    backend = "transformers"

    def __init__(
        self,
        model: str,
        *,
        generation: GenerationSettings = GenerationSettings(),
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "auto",
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if batch_size < 1:
            raise GadmsError(f"--batch-size must be 1 or more, got {batch_size}")
        self.device = resolve_device(device)
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        try:
            self.processor = AutoProcessor.from_pretrained(model)
            self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=torch_dtype).to(self.device).eval()
        except (OSError, ValueError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GadmsError(
                f"--model {model}: cannot load it as an image-text-to-text model ({detail}); pass a local model folder, "
                f"or a Hub id on a machine with internet"
            ) from None
        if getattr(self.processor, "chat_template", None) is None:
            raise GadmsError(f"--model {model}: its processor has no chat template; use an instruction-tuned model")
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.model_name = Path(model).name if Path(model).exists() else model
        self.generation = generation
        self.batch_size = batch_size
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.stop_ids = {token for token in [*eos, self.tokenizer.eos_token_id] if token is not None}
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else next(iter(self.stop_ids), 0)

    @property
    def identity(self) -> dict:
        return {"backend": self.backend, "model": self.model_name, **asdict(self.generation), "batch_size": self.batch_size}

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        replies: list[ChatReply] = []
        for start in range(0, len(requests), self.batch_size):
            replies.extend(self._generate_batch(requests[start : start + self.batch_size]))
        return replies

    def _generate_batch(self, batch: Sequence[ChatRequest]) -> list[ChatReply]:
        import torch
        from PIL import Image

        texts = [self.processor.apply_chat_template(chat_messages(r), add_generation_prompt=True, tokenize=False) for r in batch]
        images = [Image.open(io.BytesIO(r.image)).convert("RGB") for r in batch if r.image is not None]
        inputs = self.processor(text=texts, images=images or None, return_tensors="pt", padding=True).to(self.device)
        sample = self.generation.temperature > 0
        options = {"do_sample": sample, "max_new_tokens": self.generation.max_tokens, "pad_token_id": self.pad_id}
        if sample:
            options.update(temperature=self.generation.temperature, top_p=self.generation.top_p)
        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(batch_seed(batch))
            output = self.model.generate(**inputs, **options)  # batch x (prompt + new) token ids
        new_tokens = output[:, inputs["input_ids"].shape[1] :].cpu()
        decoded = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        replies = []
        for tokens, text in zip(new_tokens.tolist(), decoded):
            finished = any(token in self.stop_ids for token in tokens)
            replies.append(ChatReply(text) if finished else ChatReply(text, "truncated", "the reply reached --max-tokens"))
        return replies

"""The ``transformers`` captioner with a tiny, randomly initialised Qwen2-VL built offline here.

The tokenizer is a byte-level BPE trained on a few sentences in the test; the model has one
layer of width 32. Its text is gibberish: these tests check the plumbing (loading through
AutoProcessor + AutoModelForImageTextToText, batching, seeding, truncation, text-only
requests), not caption quality.
"""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from gadms_cli.curate.captioners import ChatRequest, GenerationSettings
from gadms_cli.curate.prompts import caption_prompt, template_prompt
from gadms_cli.errors import GadmsError

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    """A saved tiny Qwen2-VL (processor + model) folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["a woman with long black hair wears a red coat and blue jeans", "describe the person in the image"] * 5, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16),
        video_processor=Qwen2VLVideoProcessor(),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 512,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 2, 4]},
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    folder = tmp_path_factory.mktemp("tiny-qwen2-vl")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def jpeg(colour, size=(40, 100)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


def requests(count: int) -> list[ChatRequest]:
    template = "[person] with [hair] wears [top] and [bottom]."
    return [ChatRequest(caption_prompt(template), jpeg((40 * i, 90, 200)), seed=100 + i) for i in range(count)]


@pytest.fixture(scope="module")
def captioner(tiny_qwen):
    from gadms_cli.curate.captioner_transformers import TransformersCaptioner

    return TransformersCaptioner(str(tiny_qwen), generation=GenerationSettings(max_tokens=6, temperature=1.0, top_p=0.9), batch_size=2, device="cpu")


def test_batched_generation_matches_a_hand_run(captioner, tiny_qwen):
    from gadms_cli.curate.captioner_transformers import batch_seed, chat_messages

    calls = []
    original = captioner.model.generate

    def counting_generate(**kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(**kwargs)

    captioner.model.generate = counting_generate
    try:
        batch = requests(5)
        replies = captioner.generate(batch)
    finally:
        captioner.model.generate = original
    assert calls == [2, 2, 1]  # batches of --batch-size in request order
    assert len(replies) == 5 and all(isinstance(r.text, str) for r in replies)
    assert captioner.model_name == tiny_qwen.name

    # The same first batch, run by hand: left padding, the batch seed, sampling, new tokens only.
    processor = captioner.processor
    texts = [processor.apply_chat_template(chat_messages(r), add_generation_prompt=True, tokenize=False) for r in batch[:2]]
    assert texts[0].count("<|image_pad|>") == 1 and texts[0].endswith("<|im_start|>assistant\n")
    images = [Image.open(io.BytesIO(r.image)).convert("RGB") for r in batch[:2]]
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True)
    torch.manual_seed(batch_seed(batch[:2]))
    with torch.inference_mode():
        output = captioner.model.generate(**inputs, do_sample=True, temperature=1.0, top_p=0.9, max_new_tokens=6, pad_token_id=captioner.pad_id)
    expected = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert [r.text for r in replies[:2]] == expected
    # same requests, same batches -> same text (this is what makes a resumed run identical)
    assert [r.text for r in captioner.generate(batch)] == [r.text for r in replies]


def test_truncation_flag_and_text_only_requests(captioner):
    replies = captioner.generate(requests(2))
    for reply in replies:  # 6 tokens: an answer without the end token is flagged
        assert reply.problem in (None, "truncated")
    text_only = captioner.generate([ChatRequest(template_prompt("A man in a red coat."), None, seed=1)])
    assert len(text_only) == 1 and isinstance(text_only[0].text, str)


def test_pipeline_with_the_transformers_backend(captioner, tmp_path):
    from gadms_cli.curate.pipeline import CurateSettings, curate
    from gadms_cli.curate.templates import load_templates

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}.jpg").write_bytes(jpeg((100 * i, 50, 50)))
    result = curate([str(folder)], CurateSettings(out=tmp_path / "out", caption_attempts=2), detector=None, captioner=captioner, templates=load_templates())
    totals = result.all_units
    # A random model's gibberish never passes the checks: every caption is asked twice, then dropped.
    assert totals.caption_requests == 2 * 2 * 2 and sum(totals.caption_rejections.values()) == 8
    assert totals.rows == 0 and totals.dropped == {"caption_failed": 2}


def test_missing_model_names_the_flag(tmp_path):
    from gadms_cli.curate.captioner_transformers import TransformersCaptioner

    with pytest.raises(GadmsError, match="--model .*nowhere: cannot load it"):
        TransformersCaptioner(str(tmp_path / "nowhere"), device="cpu")

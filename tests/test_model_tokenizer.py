"""The CLIP BPE tokenizer with IRRA ids: same ids as open_clip except the freed last merge."""

import gzip
import socket
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer, default_bpe

from gadms_cli.model.tokenizer import EOT_ID, MASK_ID, SOT_ID, VOCAB_SIZE, Tokenizer, eos_positions

CAPTIONS = [
    "a photo of a person",
    "The woman wears a red coat, black trousers and white shoes; she carries a bag.",
    "A man with short hair in a blue T-shirt walks past the 7-Eleven.",
    "  extra   spaces\tand\nnewlines  ",
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(context_length=77)


def test_ids_equal_open_clip_for_ordinary_text(tokenizer):
    reference = SimpleTokenizer()(CAPTIONS, context_length=77)
    assert torch.equal(tokenizer(CAPTIONS), reference)


def test_special_ids_and_vocabulary_layout(tokenizer):
    assert (VOCAB_SIZE, MASK_ID, SOT_ID, EOT_ID) == (49408, 49405, 49406, 49407)
    assert len(tokenizer.encoder) == VOCAB_SIZE
    ours = tokenizer(["a photo of a person"])[0]
    # Hand-checked ids of OpenAI CLIP: SOT a photo of a person EOT.
    assert ours[:7].tolist() == [49406, 320, 1125, 539, 320, 2533, 49407]
    reference = SimpleTokenizer()
    for index in (0, 255, 256, 511, 512, 30000, 49404):  # bytes, bytes</w>, merges up to the kept last one
        assert tokenizer.decoder[index] == reference.decoder[index]
    assert tokenizer.decoder[MASK_ID] == "<|mask|>"


def test_dropped_last_merge_is_split_instead(tokenizer):
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    last_merge = lines[49152 - 256 - 2].split()  # the merge whose id is given to [MASK]
    assert "".join(last_merge) == "jekyll</w>"
    reference = SimpleTokenizer()
    assert reference.encode("jekyll") == [49405]  # open_clip still uses it
    ours = tokenizer.encode("jekyll")
    assert MASK_ID not in ours
    assert ours == [tokenizer.encoder["jeky"], tokenizer.encoder["ll</w>"]]
    assert tokenizer.decode(ours) == "jekyll"


def test_mask_literal_padding_truncation_and_eos(tokenizer):
    tokens = tokenizer(["a man in a <|mask|> coat"], context_length=12)
    assert tokens.shape == (1, 12)
    assert tokens[0, :8].tolist() == [SOT_ID, 320, 786, 530, 320, MASK_ID, 7356, EOT_ID]
    assert tokens[0, 8:].tolist() == [0, 0, 0, 0]
    long_text = " ".join(["red"] * 100)
    truncated = tokenizer([long_text], context_length=10)[0]
    assert truncated.tolist() == [SOT_ID] + [736] * 8 + [EOT_ID]
    batch = tokenizer(["a", "a b c d"], context_length=9)
    assert eos_positions(batch).tolist() == [2, 5]
    assert torch.equal(eos_positions(batch), batch.argmax(-1))


def test_decode_round_trip(tokenizer):
    tokens = tokenizer(["A woman, red coat & black bag!"])
    assert tokenizer.decode(tokens[0]) == "a woman , red coat & black bag !"
    assert tokenizer.decode_batch(tokenizer(["x", "y z"])) == ["x", "y z"]
    assert tokenizer.decode([SOT_ID, 320, MASK_ID, EOT_ID, 0], skip_special=False).startswith("<start_of_text>")


def test_works_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    bpe = Path(default_bpe())
    assert bpe.is_file() and Path(open_clip.__file__).parent in bpe.parents
    assert Tokenizer(context_length=16)(["offline works"]).shape == (1, 16)

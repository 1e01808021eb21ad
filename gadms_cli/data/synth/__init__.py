"""SketchPedes: a procedurally drawn text-based person retrieval benchmark.

Pedestrians with captioned attributes (gender, hair, hat, top, bottom, shoes,
bag) on cluttered backgrounds, written as CUHK-PEDES (``reid_raw.json`` +
``imgs/``) and WebPerson parquet shards, with optional web-style caption noise.
See docs/sketchpedes.md.

Modules: ``attributes`` (vocabulary, identity sampling), ``background`` and
``draw`` (pictures), ``render`` (one finished image), ``captions`` and
``caption_noise`` (text), ``writer`` (file formats), ``generate`` (the whole set).
"""

from gadms_cli.data.synth.attributes import COLOURS, PALETTE, Identity, sample_identities
from gadms_cli.data.synth.generate import SynthConfig, SynthSummary, generate_sketchpedes

__all__ = ["COLOURS", "PALETTE", "Identity", "SynthConfig", "SynthSummary", "generate_sketchpedes", "sample_identities"]

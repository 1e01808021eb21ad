"""Model building on open_clip: factory, tokenizer with [MASK], text taps, MTP decoder, checkpoints."""

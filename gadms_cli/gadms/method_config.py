"""The method's configuration: the ``method`` section of a recipe (owned by the method, read by the recipe).

Every key is documented in docs/recipes.md; the equations they set are in docs/method.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, with_config

from gadms_cli.config_checks import RECIPE_CONFIG

__all__ = ["MethodRecipe"]
Probability = Annotated[float, Field(ge=0, le=1)]


@with_config(RECIPE_CONFIG)
@dataclass
class MethodRecipe:
    """The objective (docs/method.md). ``gadms``: SDM on noise-masked captions + beta * MTP on
    informative-masked captions; ``irra``: SDM + ID + random 15% MLM; ``clip``: alignment only."""

    name: Literal["gadms", "irra", "clip"] = "gadms"
    alignment: Literal["sdm", "itc"] = "sdm"
    logit_scale: Annotated[float, Field(gt=0)] = 50.0
    # oracle (SketchPedes only, a bound, not a method): 0 on the words the data generator wrote
    # wrong, 1 elsewhere (data/synth/noise_labels.py)
    token_score: Literal["ga", "similarity", "random", "oracle"] = "ga"
    score_timing: Literal["online", "cached"] = "online"
    score_layers: int | float | Literal["all"] = 8  # last L text layers: a count, a fraction of the depth, or "all"
    score_normalize: Literal["batch", "sample", "rank", "centered"] = "batch"  # paper: batch min-max
    score_relu: bool = True  # paper: ReLU on the layer sum; false keeps the sign (calibration)
    score_variant: Literal["spec", "public"] = "spec"  # public: the public GA-DMS code's score (ga_score_public.py)
    initial_score: Probability = 0.85
    noise_masking: bool = True
    mtp: bool = True
    mtp_weight: Annotated[float, Field(ge=0)] = 0.4  # beta
    noise_alpha: Probability = 0.2
    noise_lambda: Annotated[float, Field(ge=0)] = 20.0
    noise_gamma: float = 0.9
    informative_alpha: Probability = 0.3
    informative_lambda: Annotated[float, Field(ge=0)] = 20.0
    informative_gamma: float = 0.1
    mlm_probability: Probability = 0.15  # irra's uniform masking
    # A caption whose masking drew no token: "sample" one (MTP/MLM only, in proportion to the
    # probabilities), force the "first" word as [MASK] (IRRA's MLM; the public GA-DMS code, in
    # BOTH maskings), or "none".
    forced_token: Literal["sample", "first", "none"] = "sample"
    id_loss: bool = False
    # Phrase alignment (docs/method.md): + phrase_weight * a contrastive loss of short attribute
    # queries written from each caption ("a woman carrying a backpack") against every image of the
    # batch they are true of. 0: off (the paper's objectives). phrase_attributes: at most this many
    # attributes per query (the gender counts as one).
    phrase_weight: Annotated[float, Field(ge=0)] = 0.0
    phrase_attributes: Annotated[int, Field(ge=1, le=4)] = 2
    phrase_logit_scale: Annotated[float, Field(gt=0)] | None = None  # None: method.logit_scale
    # Attribute head (docs/method.md): + attribute_weight * BCE of a linear head on the image
    # embedding against the gender, hair length and item types the caption states. 0: off.
    attribute_weight: Annotated[float, Field(ge=0)] = 0.0
    # false: the mean BCE over the known entries; true: each attribute's present and absent entries
    # weigh half each (rare items such as bags are not drowned by the many "absent" entries).
    attribute_balance: bool = False
    # What the head's targets come from: each "caption"'s own keys (an item it does not name is
    # absent), or the union over every training caption of the "identity" (partial captions each
    # name a few attributes; webperson data: the two captions of the image).
    attribute_targets: Literal["caption", "identity"] = "caption"

    @property
    def query_attributes(self) -> int:
        """How many attributes the datasets' attribute queries may name; 0: the batches need no
        queries nor caption keys (neither loss is on; data/attribute_phrases.py)."""
        return self.phrase_attributes if self.phrase_weight > 0 or self.attribute_weight > 0 else 0

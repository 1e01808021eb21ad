"""How pydantic checks every config section (recipes and the configs the layers own)."""

from pydantic import ConfigDict

# No unknown keys, no NaN or infinity.
RECIPE_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)

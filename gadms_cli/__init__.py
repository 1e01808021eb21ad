"""gadms: text-based person retrieval with GA-DMS (EMNLP 2025).

The command line (``gadms``) is a thin layer over the library modules in this
package; see ``docs/`` for the map from the method's equations to the code.

The Python front door (``docs/python-api.md``)::

    import gadms_cli as g
    model, preprocess, tokenizer = g.create_model_and_transforms("gadms-tiny")

Names are imported on first use, so ``import gadms_cli`` stays cheap (and the CLI can set
its thread settings before torch is imported).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "gadms_cli.api",
    "create_model_and_transforms": "gadms_cli.api",
    "get_tokenizer": "gadms_cli.api",
    "list_models": "gadms_cli.api",
    "load_model": "gadms_cli.api",
    "save_model": "gadms_cli.api",
    "Retriever": "gadms_cli.retrieve.retriever",
    "retrieval_metrics": "gadms_cli.evaluate",
    "ga_token_scores": "gadms_cli.gadms.ga_score",
    "leave_one_out_scores": "gadms_cli.gadms.attribution",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gadms_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

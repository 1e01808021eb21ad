"""gadms: text-based person retrieval with GA-DMS (EMNLP 2025).

The command line (``gadms``) is a thin layer over the library modules in this
package; see ``docs/`` for the map from the method's equations to the code.
"""

__version__ = "0.1.0"

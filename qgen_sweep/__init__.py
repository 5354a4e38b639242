"""qgen-sweep: the QGen study (LSQ quantization-aware NiN training) as declarative sweeps on Ray.

Importing the package is cheap: torch and ray are imported only by the modules that need them
(the trial engine and the Ray backend).
"""

__version__ = "0.1.0"

"""eightbit: exact, inspectable int8 quantization for edge deployment."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]

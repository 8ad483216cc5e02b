"""Client for pixguard's scoring APIs, and Spark helpers that score through a pixguard fleet."""
from .client import PixguardClient, PixguardError

__all__ = ["PixguardClient", "PixguardError"]
__version__ = "0.1.0"

"""harmosearch: region-aware image search with HarmoCLIP."""

__version__ = "0.1.0"

"""Text embedders: model resolution (resolve.py), pooling modes (pooling.py) and the Embedder (embedder.py)."""
from .embedder import Embedder
from .pooling import PoolingConfig

__all__ = ["Embedder", "PoolingConfig"]

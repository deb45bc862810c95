"""Text embedders: pooling modes (pooling.py) and the Embedder (embedder.py); names resolve in embedlab.pretrained."""
from .embedder import Embedder
from .pooling import PoolingConfig

__all__ = ["Embedder", "PoolingConfig"]

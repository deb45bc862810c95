"""Shared fixtures: the bundled MiniLM (loaded once per session), tiny random models, the data root.

Tests use real local copies only (no hub): HF_HUB_OFFLINE is forced, and EMBEDLAB_DATA defaults to ../shared/data.
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_default_data = Path(__file__).resolve().parents[2] / "shared" / "data"
if "EMBEDLAB_DATA" not in os.environ and _default_data.is_dir():
    os.environ["EMBEDLAB_DATA"] = str(_default_data)

import pytest  # noqa: E402
import torch  # noqa: E402

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def minilm():
    from embedlab.text import Embedder

    return Embedder.load(MINILM)


@pytest.fixture(scope="session")
def minilm_st():
    from sentence_transformers import SentenceTransformer

    from embedlab.text.resolve import resolve

    return SentenceTransformer(resolve(MINILM).location, device="cpu")


@pytest.fixture(scope="session")
def data_root():
    from embedlab.settings import data_root

    root = data_root()
    if root is None or not root.is_dir():
        pytest.skip("local dataset mirror not available (set EMBEDLAB_DATA)")
    return root


def tiny_tokenizer():
    from transformers import AutoTokenizer

    from embedlab.text.resolve import resolve

    return AutoTokenizer.from_pretrained(resolve(MINILM).location)


@pytest.fixture
def tiny_bert():
    """A 2-layer BERT with hidden size 32 and the real MiniLM tokenizer (random weights, seeded)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    return BertModel(cfg).eval(), tok


@pytest.fixture
def tiny_llama():
    """A 2-layer LLaMA with hidden size 32 and a real tokenizer (random weights, seeded)."""
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64, max_position_embeddings=256)
    return LlamaModel(cfg).eval(), tok


@pytest.fixture
def train_root(tmp_path, tiny_bert):
    """tmp_path holding tiny training files and a tiny saved model (see tests/tiny_training.py)."""
    from tiny_training import make_train_root

    return make_train_root(tmp_path, tiny_bert)

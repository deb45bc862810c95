"""Prompt templates: slot positions found by tokenising, on several tokenizers (BOS added / available but not added
/ absent), with truncation before templating, left padding, loud failures, and save/load of templated models."""
from __future__ import annotations

import pytest
import torch

from embedlab.errors import ConfigError
from embedlab.text import Embedder
from embedlab.text.templates import TEMPLATES, Template, TemplateEncoder

SENTENCES = ["A man is playing a guitar.", "dogs", 'He said "yes', "The essence of it, said she , is unclear ."]


def _last_word_before(template: Template, slot: str) -> str:
    text, pos = template.render("x")
    return text[: pos[slot]].split()[-1]


def _tokenizers(request):
    return [request.getfixturevalue(n) for n in ("smollm2_tokenizer", "bos_tokenizer")] + [_bert()]


def _bert():
    from conftest import tiny_tokenizer

    return tiny_tokenizer()


@pytest.mark.parametrize("name", TEMPLATES.names())
def test_slot_positions_on_several_tokenizers(request, name):
    template = TEMPLATES.get(name)
    for tok in _tokenizers(request):
        if template.bos == "always" and tok.bos_token_id is None:
            with pytest.raises(ConfigError, match="needs a BOS token"):
                TemplateEncoder(tok, template)
            continue
        ids, positions = TemplateEncoder(tok, template).encode(SENTENCES)
        for seq, pos in zip(ids, positions):
            assert pos[-1] == len(seq) - 1  # the last slot is the last token: no EOS / [SEP] after it
            for slot, p in zip(template.slots, pos):
                # The slot token is the end of the word before the marker, and nothing after it is included.
                want = _last_word_before(template, slot)
                upto = tok.decode(seq[: p + 1], skip_special_tokens=True).replace(" ", "").replace("▁", "")
                assert upto.endswith(want.replace(" ", "")), (name, slot, upto[-30:], want)
            if template.bos == "always":
                assert seq[0] == tok.bos_token_id and seq[1] != tok.bos_token_id


def test_bos_modes(smollm2_tokenizer, bos_tokenizer):
    auto = Template("t", 'S: "[X]" means<rep>')
    always = Template("t", 'S: "[X]" means<rep>', bos="always")
    never = Template("t", 'S: "[X]" means<rep>', bos="never")
    tok = smollm2_tokenizer  # has a BOS token, does not add it
    assert TemplateEncoder(tok, auto).encode(["a"])[0][0][0] != tok.bos_token_id
    assert TemplateEncoder(tok, always).encode(["a"])[0][0][0] == tok.bos_token_id
    tok = bos_tokenizer  # adds <s> ... </s>
    ids = TemplateEncoder(tok, auto).encode(["a"])[0][0]
    assert ids[0] == tok.bos_token_id and ids[-1] != tok.eos_token_id
    assert TemplateEncoder(tok, never).encode(["a"])[0][0][0] != tok.bos_token_id


def test_sentence_truncated_before_templating(smollm2_tokenizer):
    t = TEMPLATES.get("csesfp_llama")
    enc = TemplateEncoder(smollm2_tokenizer, t)
    long = " ".join(["word"] * 100)
    ids, pos = enc.encode([long])
    short_ids, _ = enc.encode([" ".join(["word"] * 32)])
    assert ids == short_ids  # cut to 32 sentence tokens; the template itself is never cut
    assert smollm2_tokenizer.decode([ids[0][pos[0][1]]]).strip() == "as"


def test_bad_templates_and_unlocatable_slots(smollm2_tokenizer):
    with pytest.raises(ConfigError, match="sentence slot"):
        Template("t", "no sentence here<rep>")
    with pytest.raises(ConfigError, match="no representation slot"):
        Template("t", 'This sentence : "[X]" means')
    with pytest.raises(ConfigError, match="before the sentence"):
        Template("t", "a<rep> [X] b")
    # " summarized" is one token: a slot after " summar" cannot be located.
    with pytest.raises(ConfigError, match="slot <rep> cannot be located"):
        TemplateEncoder(smollm2_tokenizer, Template("t", "It can be [X] summar<rep>ized")).encode(["a cat"])


@pytest.fixture
def tiny_decoder(tiny_llama):
    backbone, tok = tiny_llama
    return Embedder(backbone, tok, max_length=64, is_decoder=True, name="tiny-llama", template="csesfp_llama",
                    normalize=True) if tok.bos_token_id is not None else _with_bos(backbone, tok)


def _with_bos(backbone, tok):
    tok.bos_token = "[CLS]"  # the BERT tokenizer has no BOS; [CLS] plays it (its id is in the vocabulary)
    return Embedder(backbone, tok, max_length=64, is_decoder=True, name="tiny-llama", template="csesfp_llama")


def test_left_padded_batch_equals_single_forwards(tiny_decoder):
    model = tiny_decoder
    texts = ["a man plays a guitar", "dogs", "a much longer sentence about a dog running in a park"]
    feats = model.tokenize(texts)
    with torch.no_grad():
        batch = model.forward_slots(feats)
        for i, text in enumerate(texts):
            single = model.forward_slots(model.tokenize([text]))
            for slot in ("rep1", "rep2"):
                assert torch.allclose(batch[slot][i], single[slot][0], atol=1e-5)
    # encode() gives Rep2 by default, Rep1+Rep2 when asked.
    rep2 = model.encode(texts, convert_to="torch")
    assert torch.allclose(rep2, batch["rep2"], atol=1e-5)
    model.set_template("csesfp_llama", slots=["rep1", "rep2"])
    both = model.encode(texts, convert_to="torch")
    want = torch.nn.functional.normalize((batch["rep1"] + batch["rep2"]) / 2, dim=-1)
    assert torch.allclose(both, want, atol=1e-5)
    with pytest.raises(ConfigError, match="prefix prompts do not apply"):
        model.encode(texts, prompt="query: ")


def test_templated_model_saves_and_loads(tiny_decoder, tmp_path):
    model = tiny_decoder
    model.set_template("csesfp_llama", slots=["rep1", "rep2"])
    model.save(tmp_path / "m")
    loaded = Embedder.load(str(tmp_path / "m"))
    assert loaded.template.name == "csesfp_llama" and loaded.slots == ("rep1", "rep2") and loaded.is_decoder
    texts = ["a man plays a guitar", "dogs"]
    assert torch.allclose(torch.as_tensor(model.encode(texts)), torch.as_tensor(loaded.encode(texts)), atol=1e-5)
    assert loaded.model_hash() == model.model_hash()
    loaded.set_template("csesfp_llama")  # Rep2 only: another model hash (the cache must not mix them)
    assert loaded.model_hash() != model.model_hash()


def test_rep2_carries_over_to_sentence_transformers(smollm2_tokenizer, tmp_path):
    """A templated decoder saved by embedlab loads in sentence-transformers with last-token pooling: Rep2 is
    reproduced when the caller renders the template (BOS included) — the documented way; Rep1 does not carry over."""
    from sentence_transformers import SentenceTransformer
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    tok = smollm2_tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64, max_position_embeddings=256)
    model = Embedder(LlamaModel(cfg).eval(), tok, max_length=64, is_decoder=True, name="tiny",
                     template="csesfp_llama")
    model.save(tmp_path / "m")
    texts = ["a man plays a guitar", "two dogs run"]
    ours = torch.as_tensor(model.encode(texts))
    rendered = [tok.bos_token + model.template.render(t)[0] for t in texts]
    st = SentenceTransformer(str(tmp_path / "m"), device="cpu")
    theirs = torch.stack([st.encode([r], convert_to_tensor=True)[0] for r in rendered])
    assert torch.allclose(ours, torch.nn.functional.normalize(theirs, dim=-1), atol=1e-4)

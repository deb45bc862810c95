"""The zero-shot VLM adapter on a tiny randomly initialised LLaVA saved to a folder and loaded back (no downloads)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from embedlab.errors import ConfigError, ModelError
from embedlab.medvqa.zeroshot import ZeroShotVLM

WORDS = ["<pad>", "<unk>", "<s>", "</s>", "user", "assistant", ":", ".", "?", "answer", "with", "a", "single", "word",
         "or", "phrase", "is", "there", "fracture", "which", "side", "of", "the", "lung", "what", "organ", "this",
         "image", "show", "shows", "abnormal", "yes", "no", "left", "right", "liver", "heart", "kidney", "brain"]
PROMPT = "USER: <image>\n{q} Answer with a single word or phrase. ASSISTANT:"  # the documented default, written out
QUESTIONS = ["is there a fracture ?", "which side of the lung is abnormal ?", "what organ does this image show ?"]
CANDIDATES = [["yes", "no"], ["left lung", "right lung", "liver", "the left lung"], None]
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} {% endfor %}"
                 "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def _tiny(chat_template: str | None = None):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                  eos_token="</s>")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_token_id = tok.convert_tokens_to_ids("<image>")
    # 16x16 images, 8x8 patches: 4 patches + CLS; strategy "default" drops CLS -> 4 image tokens in model and processor
    images = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=8, num_additional_image_tokens=1,
                               vision_feature_select_strategy="default", chat_template=chat_template)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=16, patch_size=8, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                       initializer_range=0.3, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                         vision_feature_select_strategy="default", vision_feature_layer=-2, image_seq_length=4)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    return model, processor


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llava")
    model, processor = _tiny()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model, processor


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    grey = Image.fromarray((rng.random((20, 24)) * 255).astype("uint8"), mode="L")  # grey, converted to RGB
    rgb = [Image.fromarray((rng.random((16 + 4 * i, 18, 3)) * 255).astype("uint8"), mode="RGB") for i in range(2)]
    return [grey, *rgb]


@pytest.fixture(scope="module")
def vlm(tiny):
    return ZeroShotVLM.load(tiny[0], dtype="fp32", max_new_tokens=4)


def _reference_loglik(model, processor, question: str, image, answer: str) -> float:
    """log p(answer | prompt, image) by one plain forward pass of the unbatched prompt + answer."""
    enc = processor(images=[image.convert("RGB")], text=[PROMPT.format(q=question) + " " + answer],
                    return_tensors="pt")
    n = len(processor.tokenizer(answer, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = model(**enc).logits[0].float()
    logp = torch.log_softmax(logits[-n - 1:-1], dim=-1)
    return float(logp.gather(-1, enc["input_ids"][0, -n:, None]).sum())


def test_closed_answers_match_a_plain_forward_reference(tiny, vlm, images):
    _, model, processor = tiny
    preds = vlm.predict(QUESTIONS, images, CANDIDATES, batch_size=3)
    assert len(preds) == 3
    for q, image, cands, pred in zip(QUESTIONS, images, CANDIDATES, preds):
        if cands is None:
            continue
        ref = [_reference_loglik(model, processor, q, image, c) for c in cands]
        assert pred["answer"] in cands
        assert pred["answer"] == cands[int(np.argmax(ref))]
        probs = [p for _, p in pred["top"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-9
        assert len(pred["top"]) == min(5, len(cands))
        expected = torch.softmax(torch.tensor(ref, dtype=torch.float64), 0).tolist()
        assert dict(pred["top"]) == pytest.approx({c: p for c, p in zip(cands, expected)}, abs=1e-4)
    # the reference scores are not all alike, so the argmax check above means something
    ref = [_reference_loglik(model, processor, QUESTIONS[1], images[1], c) for c in CANDIDATES[1]]
    assert max(ref) - sorted(ref)[-2] > 1e-3


def test_open_answers_are_greedy_strings(tiny, vlm, images):
    _, model, processor = tiny
    pred = vlm.predict(QUESTIONS[2:], images[2:], [None])[0]
    assert isinstance(pred["answer"], str) and pred["answer"] == pred["answer"].strip().lower()
    assert len(pred["top"]) == 1 and pred["top"][0][0] == pred["answer"] and 0 < pred["top"][0][1] <= 1
    # greedy by hand: the first generated token is the argmax after the prompt
    enc = processor(images=[images[2].convert("RGB")], text=[PROMPT.format(q=QUESTIONS[2])], return_tensors="pt")
    with torch.no_grad():
        first = int(model(**enc).logits[0, -1].argmax())
    word = processor.tokenizer.convert_ids_to_tokens(first)
    if word not in ("</s>", "<pad>", "<image>", "<s>"):
        assert pred["answer"].split()[0] == word


def test_batch_size_does_not_change_answers(vlm, images):
    one = vlm.predict(QUESTIONS, images, CANDIDATES, batch_size=1)
    three = vlm.predict(QUESTIONS, images, CANDIDATES, batch_size=3)
    two = vlm.predict(QUESTIONS[::-1], images[::-1], CANDIDATES[::-1], batch_size=2)[::-1]
    for a, b, c in zip(one, three, two):
        assert a["answer"] == b["answer"] == c["answer"]
        assert [x for x, _ in a["top"]] == [x for x, _ in b["top"]] == [x for x, _ in c["top"]]
        assert [p for _, p in a["top"]] == pytest.approx([p for _, p in b["top"]], abs=1e-4)
        assert [p for _, p in a["top"]] == pytest.approx([p for _, p in c["top"]], abs=1e-4)
    # open questions of different lengths in one generation batch (left padding) answer as they do alone
    alone = [vlm.predict([q], [im], [None])[0] for q, im in zip(QUESTIONS, images)]
    together = vlm.predict(QUESTIONS, images, [None] * 3, batch_size=3)
    assert [a["answer"] for a in alone] == [t["answer"] for t in together]
    assert [a["top"][0][1] for a in alone] == pytest.approx([t["top"][0][1] for t in together], rel=1e-3)


def test_progress_and_config(vlm, images):
    calls = []
    vlm.predict(QUESTIONS, images, CANDIDATES, batch_size=2, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (3, 3) and len(calls) == 2
    cfg = vlm.config()
    assert cfg["dtype"] == "fp32" and cfg["max_new_tokens"] == 4 and cfg["length_normalise"] is False
    assert cfg["prompt_template"] == PROMPT.replace("{q}", "{question}") and cfg["prompt_source"] == "default"
    assert vlm.prompt("is it?") == PROMPT.format(q="is it?")


def test_length_normalise_divides_by_token_count(tiny, images):
    _, model, processor = tiny
    m = ZeroShotVLM.load(tiny[0], length_normalise=True)
    pred = m.predict(QUESTIONS[1:2], images[1:2], CANDIDATES[1:2])[0]
    cands = CANDIDATES[1]
    ref = [_reference_loglik(model, processor, QUESTIONS[1], images[1], c) / len(c.split()) for c in cands]
    expected = torch.softmax(torch.tensor(ref, dtype=torch.float64), 0).tolist()
    assert dict(pred["top"]) == pytest.approx(dict(zip(cands, expected)), abs=1e-4)
    assert m.config()["length_normalise"] is True


def test_bf16_load_answers(tiny, images):
    m = ZeroShotVLM.load(tiny[0], dtype="bf16", max_new_tokens=3)
    assert next(m.model.parameters()).dtype == torch.bfloat16
    preds = m.predict(QUESTIONS, images, CANDIDATES, batch_size=2)
    assert preds[0]["answer"] in CANDIDATES[0] and preds[1]["answer"] in CANDIDATES[1]
    assert isinstance(preds[2]["answer"], str)
    assert all(math.isfinite(p) for pred in preds for _, p in pred["top"])
    assert m.config()["dtype"] == "bf16"


def test_chat_template_and_override(tmp_path, images):
    model, processor = _tiny(chat_template=CHAT_TEMPLATE)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    m = ZeroShotVLM.load(tmp_path)
    assert m.config()["prompt_source"] == "processor chat template"
    assert m.prompt("is it?") == PROMPT.format(q="is it?")
    assert m.predict(QUESTIONS[:1], images[:1], CANDIDATES[:1])[0]["answer"] in CANDIDATES[0]
    over = ZeroShotVLM.load(tmp_path, prompt_template="<image> Q: {question} A:")
    assert over.prompt("is it?") == "<image> Q: is it? A:" and over.config()["prompt_source"] == "override"
    assert over.predict(QUESTIONS[:1], images[:1], CANDIDATES[:1])[0]["answer"] in CANDIDATES[0]
    with pytest.raises(ConfigError, match="question"):
        ZeroShotVLM.load(tmp_path, prompt_template="<image> what?")
    with pytest.raises(ConfigError, match="image token"):
        ZeroShotVLM.load(tmp_path, prompt_template="{question}")


def test_bad_names_are_model_errors(tmp_path):
    from transformers import LlamaConfig

    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelError, match="no-such-model") as e:
        ZeroShotVLM.load(missing)
    assert "LLaVA" in str(e.value) and "processor" in str(e.value)
    text_only = tmp_path / "text-only"
    LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        text_only)
    with pytest.raises(ModelError, match="text-only.*llama"):
        ZeroShotVLM.load(text_only)


def test_bad_inputs_are_value_errors(vlm, images):
    with pytest.raises(ValueError, match="same length"):
        vlm.predict(QUESTIONS, images, CANDIDATES[:2])
    with pytest.raises(ValueError, match="same length"):
        vlm.predict(QUESTIONS, images[:2], CANDIDATES)
    with pytest.raises(ValueError, match=r"candidates\[1\] is empty"):
        vlm.predict(QUESTIONS, images, [["yes", "no"], [], None])
    with pytest.raises(ValueError, match=r"candidates\[0\] holds an empty answer"):
        vlm.predict(QUESTIONS, images, [["yes", " "], None, None])


def test_the_zeroshot_job_kind_scores_a_task_and_records_its_settings(tiny, tmp_path, data_root):
    from embedlab.bench.executors import InlineExecutor
    from embedlab.bench.jobs import JobQueue
    from embedlab.jobkinds import JobSpec
    from embedlab.medvqa.datasets import load_dataset
    from embedlab.medvqa.jobs import closed_candidates

    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    queue = JobQueue(url)
    spec = JobSpec(kind="vqa-zeroshot", name="zs", model=str(tiny[0]), tasks=("vqa-rad-val",), experiment="zs",
                   config={"limit": 6, "candidates": "yesno", "max_new_tokens": 2})
    ids = queue.submit([spec], [tmp_path / "job"])
    assert InlineExecutor(url).run(ids) == {ids[0]: "done"}
    rows = {r["metric"]: r for r in queue.store.query(experiment="zs")}
    assert 0 <= rows["overall"]["value"] <= 100
    extra = rows["overall"]["extra"]
    assert extra["limit"] == 6 and extra["counts"]["n"] == 6 and extra["zeroshot"]["max_new_tokens"] == 2
    cands = closed_candidates(load_dataset("vqa-rad", "val-train"), "train")
    assert {"yes", "no"} <= set(cands["PRES"]) and set(cands[""]) >= set(cands["PRES"])
    with pytest.raises(Exception, match="candidates"):
        queue.submit([JobSpec(kind="vqa-zeroshot", name="b", model="x", tasks=("vqa-rad-val",),
                              config={"candidates": "all"})], [tmp_path / "b"])

"""CSE-SFP and the two-pass baselines in the trainer, on a tiny LLaMA: a short run lowers the loss (full and LoRA),
LoRA resumes exactly, the two-pass baseline really takes two stochastic views, and bad input stops before training."""
from __future__ import annotations

import random

import pytest
import torch
from safetensors.torch import load_file

from embedlab.config import load_recipe
from embedlab.errors import ConfigError, DataError, UnknownChoiceError
from embedlab.objectives import single_pass_loss
from embedlab.text import Embedder
from embedlab.train import steps as steps_module
from embedlab.train.trainer import Trainer

from tiny_training import WORDS


@pytest.fixture
def decoder_root(tmp_path, tiny_llama):
    backbone, tok = tiny_llama
    tok.bos_token = "[CLS]"  # the test tokenizer (BERT's) has no BOS; the CSE-SFP templates need one
    Embedder(backbone, tok, max_length=64, is_decoder=True, name="tiny-llama").save(tmp_path / "tiny-llama")
    rng = random.Random(0)
    with open(tmp_path / "sentences.txt", "w") as f:
        for _ in range(96):
            f.write(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + "\n")
        f.write("\n")  # a blank line is skipped
    return tmp_path


def recipe(tmp, objective="cse_sfp", extra=()):
    text = f"""
name: t
seed: 5
output_dir: {tmp / 'out'}
model: {{name: {tmp / 'tiny-llama'}, template: csesfp_llama, max_length: 64}}
data:
  sources: [{{name: s, path: {tmp / 'sentences.txt'}, task: unsup}}]
sampler: {{batch_size: {{unsup: 16}}}}
objective: {{kind: {objective}}}
train: {{lr: 2.0e-3, max_steps: 8, save_every: 4, log_every: 1, select_on: []}}
"""
    (tmp / "r.yaml").write_text(text)
    return load_recipe(tmp / "r.yaml", list(extra))


def _fixed_batch_loss(model_dir, texts):
    model = Embedder.load(str(model_dir))
    if model.template is None:  # the untrained folder
        model.set_template("csesfp_llama")
    with torch.no_grad():
        reps = model.forward_slots(model.tokenize(texts))
    return single_pass_loss(reps["rep2"], reps["rep1"])[0].item()


@pytest.mark.parametrize("lora", [False, True])
def test_short_run_lowers_the_loss(decoder_root, lora):
    tmp = decoder_root
    extra = ["model.lora={r: 8, alpha: 16, dropout: 0.0, target_modules: [q_proj, v_proj]}"] if lora else []
    texts = [line.strip() for line in open(tmp / "sentences.txt") if line.strip()][:32]
    before = _fixed_batch_loss(tmp / "tiny-llama", texts)
    final = Trainer(recipe(tmp, extra=extra), show_progress=False).train()
    after = _fixed_batch_loss(final, texts)
    assert after < before - 0.05, (before, after)
    saved = Embedder.load(str(final))
    assert saved.template.name == "csesfp_llama" and saved.slots == ("rep2",)
    if lora:  # the saved model is the merged one: plain weights, no adapter names
        assert not any("lora" in k for k in load_file(str(final / "model.safetensors")))


def test_lora_resume_gives_identical_weights(decoder_root):
    tmp = decoder_root
    lora = ["model.lora={r: 4, alpha: 8, dropout: 0.1, target_modules: all-linear}"]
    Trainer(recipe(tmp, extra=lora + [f"output_dir={tmp / 'a'}"]), show_progress=False).train()
    Trainer(recipe(tmp, extra=lora + [f"output_dir={tmp / 'b'}"]), show_progress=False).train(stop_after=4)
    Trainer(recipe(tmp, extra=lora + [f"output_dir={tmp / 'b'}"]), show_progress=False).train()
    a = load_file(str(tmp / "a" / "final" / "model.safetensors"))
    b = load_file(str(tmp / "b" / "final" / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_two_pass_baseline_takes_two_stochastic_views(decoder_root, monkeypatch):
    tmp = decoder_root
    seen = []
    real = steps_module.infonce_loss

    def spy(anchor, positive, *args, **kw):
        seen.append((anchor.detach().clone(), positive.detach().clone()))
        return real(anchor, positive, *args, **kw)

    monkeypatch.setattr(steps_module, "infonce_loss", spy)
    Trainer(recipe(tmp, "simcse_prompt", ["model.dropout=0.2", "train.max_steps=2", "train.save_every=null"]),
            show_progress=False).train()
    assert len(seen) == 2
    for a, p in seen:  # two passes over the same texts: different (dropout) views, but close
        assert not torch.allclose(a, p, atol=1e-4)
        assert torch.nn.functional.cosine_similarity(a, p).mean() > 0.5
    seen.clear()
    Trainer(recipe(tmp, "simcse_prompt", ["model.dropout=0.0", "train.max_steps=1", "train.save_every=null",
                                          f"output_dir={tmp / 'nodrop'}"]), show_progress=False).train()
    a, p = seen[0]
    assert torch.allclose(a, p, atol=1e-5)  # without dropout the two passes agree: the noise is the dropout


def test_bad_input_stops_before_training(decoder_root, tmp_path):
    tmp = decoder_root
    (tmp / "empty.txt").write_text("\n\n")
    bad_file = recipe(tmp, extra=[f"data.sources=[{{name: s, path: {tmp / 'empty.txt'}, task: unsup}}]"])
    with pytest.raises(DataError, match="empty.txt.*no sentences"):
        Trainer(bad_file, show_progress=False).setup()
    with pytest.raises((ConfigError, ValueError), match="two representation slots"):
        recipe(tmp, extra=["model.template=prompteol"])
    with pytest.raises(UnknownChoiceError, match="no_such_template"):
        recipe(tmp, extra=["model.template=no_such_template"])
    with pytest.raises(ConfigError, match="match no linear layer.*q_proj"):
        Trainer(recipe(tmp, extra=["model.lora={target_modules: [query_proj]}"]), show_progress=False).setup()
    with pytest.raises(ConfigError, match="CUDA"):
        Trainer(recipe(tmp, extra=["model.load_in_4bit=true", "model.lora={r: 4}"]), show_progress=False).setup()
    with pytest.raises(ConfigError, match="unsup"):
        recipe(tmp, "codiemb")
    # A tokenizer without a BOS token, with a template that needs one.
    backbone, tok = Embedder.load(str(tmp / "tiny-llama")).backbone, None
    from conftest import tiny_tokenizer

    tok = tiny_tokenizer()
    Embedder(backbone, tok, max_length=64, is_decoder=True).save(tmp_path / "no-bos")
    with pytest.raises(ConfigError, match="needs a BOS token"):
        Trainer(recipe(tmp, extra=[f"model.name={tmp_path / 'no-bos'}"]), show_progress=False).setup()

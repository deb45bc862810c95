"""Zero-shot Med-VQA with a Hugging Face LLaVA-style vision-language model (``LlavaForConditionalGeneration``).

    from embedlab.medvqa.zeroshot import ZeroShotVLM
    m = ZeroShotVLM.load("llava-hf/llava-1.5-7b-hf", dtype="bf16", device="cuda")    # or a local folder
    preds = m.predict(questions, images, candidates, batch_size=4)
    preds[0]                 # {"answer": "yes", "top": [("yes", 0.71), ("no", 0.29)]}
    m.config()               # what decides the predictions; record it with the results

What it does:

- loads the model and its processor (``AutoProcessor``: image processor + tokenizer + ``<image>`` token) from a local
  folder or a hub id (offline: the hub cache), in fp32, bf16 or fp16, on one device;
- builds one prompt per question: the ``prompt_template`` given (``{question}`` is replaced by the question text, by
  plain substitution, so other braces are kept as they are; it must hold the processor's image token once), else the
  processor's (or the tokenizer's) chat template with one user turn [image, question + SHORT_ANSWER] and the
  generation prompt, else ``DEFAULT_TEMPLATE`` (LLaVA-1.5's ``USER: <image>\\n... ASSISTANT:``). The processor expands
  the image token to the number of image features (``patch_size``, ``vision_feature_select_strategy``);
- closed questions (a list of candidate answers): candidate-constrained. Every candidate is scored by teacher forcing
  as log p(candidate tokens | prompt, image); the answer is the best one and ``top`` holds the softmax of the scores
  over the candidates (top 5, best first). The score is the *sum* of the token log-probabilities by default: that is
  the log-probability of the whole answer string, so the softmax is the model's own distribution renormalised to the
  candidates. ``length_normalise=True`` divides by the number of tokens (the mean), which removes the bias of the sum
  towards short answers but no longer is a probability of the answer; on yes/no (one token each) both agree.
  The candidate's tokens are those that the prompt followed by a separator and the candidate tokenises to beyond the
  prompt's own tokens (the separator is a space unless the prompt ends with whitespace), as the model would write
  them after the prompt. Candidates of one token are read off one forward pass of the prompt; longer ones get a
  forward pass of prompt + candidate each, batched (``batch_size`` sequences a pass);
- open questions (``None`` for candidates): greedy decoding of up to ``max_new_tokens`` tokens (stopping at the end of
  sequence token); the text is decoded without special tokens, stripped, cut to its first line and lower-cased, and
  ``top`` is ``[(answer, p)]`` with p the probability of the generated tokens (before the end token; all of them,
  also those after the first line).

Batches are left-padded with attention masks and explicit position ids, so an answer does not depend on the batch it
is in (up to floating-point rounding). Grey or palette images are converted to RGB.

What it does not do: it does not train or fine-tune, does not normalise answers and does not score
(``embedlab.medvqa.metrics`` does both), and does not pick the candidate lists (the caller passes them: e.g. yes/no,
or the closed answers of the train split for the question's type). A name that cannot be loaded is a ``ModelError``;
mismatched input lengths, an empty candidate list or an empty candidate are a ``ValueError`` naming the index.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Sequence

import torch

from ..errors import ConfigError, ModelError

SHORT_ANSWER = "Answer with a single word or phrase."
DEFAULT_TEMPLATE = "USER: <image>\n{question} " + SHORT_ANSWER + " ASSISTANT:"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOP_K = 5
EXPECTED = ("a LLaVA-style model: a local folder or hub id (offline: in the hub cache) with config.json of "
            "model_type 'llava' and its weights, plus the processor files (processor_config.json and/or "
            "preprocessor_config.json, and the tokenizer files)")

Progress = Callable[[int, int], None]


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


class ZeroShotVLM:
    """A LLaVA-style model answering questions about images without training. Build it with ``load``."""

    def __init__(self, model, processor, *, name: str, dtype: str, device: str, prompt_template: str | None,
                 max_new_tokens: int, length_normalise: bool = False):
        self.model, self.processor, self.tokenizer = model, processor, processor.tokenizer
        self.name, self.dtype, self.device = name, dtype, torch.device(device)
        self.max_new_tokens, self.length_normalise = int(max_new_tokens), bool(length_normalise)
        self.image_token = getattr(processor, "image_token", None) or "<image>"
        if self.tokenizer.pad_token_id is None:  # LLaMA tokenizers have none; padding is masked anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.prompt_source, self.template = self._choose_template(prompt_template)
        stops = [self.tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)]
        self.stop_ids = {int(t) for s in stops if s is not None for t in (s if isinstance(s, (list, tuple)) else [s])}

    # ------------------------------------------------------------------------------------------------------ loading

    @classmethod
    def load(cls, name_or_path, *, dtype: str = "fp32", device: str = "cpu", prompt_template: str | None = None,
             max_new_tokens: int = 8, length_normalise: bool = False) -> ZeroShotVLM:
        """Load model and processor from a local folder or hub id; ``ModelError`` (naming it) when that fails."""
        if dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r} for the zero-shot VLM; valid choices: {', '.join(DTYPES)}")
        if int(max_new_tokens) < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        name = str(name_or_path)
        import transformers
        from transformers import AutoConfig, AutoProcessor, LlavaConfig, LlavaForConditionalGeneration

        try:
            config = AutoConfig.from_pretrained(name)
        except Exception as e:  # OSError, HFValidationError, ValueError, ...: a bad name, folder or config.json
            raise ModelError(f"cannot load the zero-shot VLM {name!r} ({_first_line(e)}); expected {EXPECTED}") from e
        if not isinstance(config, LlavaConfig):
            raise ModelError(f"cannot load the zero-shot VLM {name!r}: its model_type is "
                             f"{getattr(config, 'model_type', None)!r}; expected {EXPECTED}")
        try:
            processor = AutoProcessor.from_pretrained(name)
        except Exception as e:
            raise ModelError(f"cannot load the processor of the zero-shot VLM {name!r} ({_first_line(e)}); "
                             f"expected {EXPECTED}") from e
        if getattr(processor, "image_processor", None) is None or getattr(processor, "tokenizer", None) is None:
            raise ModelError(f"the zero-shot VLM {name!r} has no image processor + tokenizer pair (got "
                             f"{type(processor).__name__}); expected {EXPECTED}")
        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
        dtype_kw = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
        try:
            model = LlavaForConditionalGeneration.from_pretrained(name, **{dtype_kw: DTYPES[dtype]})
        except Exception as e:
            raise ModelError(f"cannot load the weights of the zero-shot VLM {name!r} ({_first_line(e)}); "
                             f"expected {EXPECTED}") from e
        model.to(device).eval()
        return cls(model, processor, name=name, dtype=dtype, device=device, prompt_template=prompt_template,
                   max_new_tokens=max_new_tokens, length_normalise=length_normalise)

    def config(self) -> dict[str, Any]:
        """The settings that decide its predictions (recorded with its results)."""
        return {"model": self.name, "kind": "zero-shot-vlm", "dtype": self.dtype,
                "prompt_template": self.template, "prompt_source": self.prompt_source,
                "max_new_tokens": self.max_new_tokens, "length_normalise": self.length_normalise,
                "closed": "candidate log-likelihood (" + ("mean" if self.length_normalise else "sum") + ")",
                "open": "greedy"}

    # ------------------------------------------------------------------------------------------------------ prompts

    def _choose_template(self, override: str | None) -> tuple[str, str]:
        if override is not None:
            source, template = "override", override
        else:
            source, template = "default", DEFAULT_TEMPLATE.replace("<image>", self.image_token)
            rendered = self._chat_template("{question}")
            if rendered is not None:
                source, template = rendered
        if "{question}" not in template:
            raise ConfigError(f"the prompt template ({source}) has no {{question}}: {template!r}")
        if template.count(self.image_token) != 1:
            raise ConfigError(f"the prompt template ({source}) must hold the image token {self.image_token!r} "
                              f"once: {template!r}")
        return source, template

    def _chat_template(self, question: str) -> tuple[str, str] | None:
        """(source, the prompt) from the processor's or the tokenizer's chat template, or None when neither has one."""
        text = f"{question} {SHORT_ANSWER}"
        if getattr(self.processor, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
            source = "processor chat template"
            prompt = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        elif getattr(self.tokenizer, "chat_template", None):
            conversation = [{"role": "user", "content": f"{self.image_token}\n{text}"}]
            source = "tokenizer chat template"
            prompt = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        else:
            return None
        if isinstance(prompt, list):  # a batch of one
            prompt = prompt[0]
        bos = self.tokenizer.bos_token
        if bos and prompt.startswith(bos):  # the tokenizer adds it again
            prompt = prompt[len(bos):]
        return source, prompt

    def prompt(self, question: str) -> str:
        """The prompt text for a question (before the processor expands the image token)."""
        return self.template.replace("{question}", question.strip())

    # ------------------------------------------------------------------------------------------------------ predict

    def predict(self, questions: Sequence[str], images: Sequence, candidates: Sequence[Sequence[str] | None], *,
                batch_size: int = 4, progress: Progress | None = None) -> list[dict[str, Any]]:
        """One ``{"answer": str, "top": [(answer, prob), ...]}`` per question; candidates ``None`` = open question.

        ``batch_size`` is the number of sequences in one forward pass (questions, or prompt + candidate rows);
        ``progress(done, total)`` is called after each batch of questions."""
        n = len(questions)
        if len(images) != n or len(candidates) != n:
            raise ValueError(f"questions, images and candidates must have the same length: got {n}, {len(images)} "
                             f"and {len(candidates)}" + (f" (mismatch from index {min(len(images), len(candidates))})"
                                                         if min(len(images), len(candidates)) < n else ""))
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        cands: list[list[str] | None] = []
        for i, cs in enumerate(candidates):
            if cs is None:
                cands.append(None)
                continue
            if isinstance(cs, str):
                raise ValueError(f"candidates[{i}] is a string ({cs!r}); expected a list of answers or None")
            cs = list(dict.fromkeys(str(c).strip() for c in cs))  # duplicates would split the probability
            if not cs:
                raise ValueError(f"candidates[{i}] is empty (question {i}: {questions[i]!r}); pass None for an "
                                 f"open question")
            if any(not c for c in cs):
                raise ValueError(f"candidates[{i}] holds an empty answer (question {i}: {questions[i]!r})")
            cands.append(cs)
        rgb = [self._rgb(im, i) for i, im in enumerate(images)]

        out: list[dict[str, Any] | None] = [None] * n
        closed = [i for i in range(n) if cands[i] is not None]
        opened = [i for i in range(n) if cands[i] is None]
        done = 0
        with torch.inference_mode():
            for idx in _chunks(closed, batch_size):
                for i, pred in zip(idx, self._closed([questions[i] for i in idx], [rgb[i] for i in idx],
                                                     [cands[i] for i in idx], batch_size)):
                    out[i] = pred
                done += len(idx)
                if progress is not None:
                    progress(done, n)
            for idx in _chunks(opened, batch_size):
                for i, pred in zip(idx, self._open([questions[i] for i in idx], [rgb[i] for i in idx])):
                    out[i] = pred
                done += len(idx)
                if progress is not None:
                    progress(done, n)
        return out  # type: ignore[return-value]

    @staticmethod
    def _rgb(image, i: int):
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise ValueError(f"images[{i}] is a {type(image).__name__}; expected a PIL image")
        return image if image.mode == "RGB" else image.convert("RGB")

    def _encode(self, questions: list[str], images: list) -> tuple[list[str], list[list[int]], torch.Tensor]:
        """Prompts, their token ids (image token expanded, no padding) and pixel values, one per question."""
        prompts = [self.prompt(q) for q in questions]
        enc = self.processor(images=images, text=prompts, padding=True, return_tensors="pt")
        ids = []
        eos = self.tokenizer.eos_token_id
        for row, mask in zip(enc["input_ids"], enc["attention_mask"]):
            seq = row[mask.bool()].tolist()
            if len(seq) > 1 and eos is not None and seq[-1] == eos:  # a tokenizer that appends EOS: not in a prompt
                seq = seq[:-1]
            ids.append(seq)
        return prompts, ids, enc["pixel_values"]

    def _continuation(self, prompt: str, answer: str) -> list[int]:
        """The ids of ``answer`` as written after ``prompt``: prompt + separator + answer's beyond the prompt's own."""
        sep = "" if prompt[-1:].isspace() else " "
        head = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full = self.tokenizer(prompt + sep + answer, add_special_tokens=False)["input_ids"]
        if full[:len(head)] == head:
            return full[len(head):]
        return self.tokenizer(sep + answer, add_special_tokens=False)["input_ids"]  # merged across the boundary

    def _forward(self, seqs: list[list[int]], pixel_values: torch.Tensor, keep: int) -> torch.Tensor:
        """Log-probabilities (float32) at the last ``keep`` positions of each left-padded sequence: (B, keep, V)."""
        ids, mask, pos = _left_pad(seqs, self.tokenizer.pad_token_id)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=pos.to(self.device),
                         pixel_values=pixel_values.to(self.device, DTYPES[self.dtype]), logits_to_keep=keep)
        return torch.log_softmax(out.logits[:, -keep:].float(), dim=-1)

    def _closed(self, questions, images, cands, batch_size) -> list[dict[str, Any]]:
        prompts, ids, pixels = self._encode(questions, images)
        conts = [[self._continuation(p, c) for c in cs] for p, cs in zip(prompts, cands)]
        for i, (cs, cc) in enumerate(zip(cands, conts)):
            for c, t in zip(cs, cc):
                if not t:
                    raise ValueError(f"candidate {c!r} of question {questions[i]!r} has no tokens")
        scores = [[0.0] * len(cs) for cs in cands]
        # one-token candidates: read off one pass of the prompts
        first = [i for i, cc in enumerate(conts) if any(len(t) == 1 for t in cc)]
        for sub in _chunks(first, batch_size):
            logp = self._forward([ids[i] for i in sub], pixels[sub], keep=1)[:, -1]
            for row, i in enumerate(sub):
                for j, t in enumerate(conts[i]):
                    if len(t) == 1:
                        scores[i][j] = float(logp[row, t[0]])
        # longer candidates: one pass of prompt + candidate each
        rows = [(i, j) for i, cc in enumerate(conts) for j, t in enumerate(cc) if len(t) > 1]
        for sub in _chunks(rows, batch_size):
            keep = max(len(conts[i][j]) for i, j in sub) + 1
            logp = self._forward([ids[i] + conts[i][j] for i, j in sub], pixels[[i for i, _ in sub]], keep=keep)
            for row, (i, j) in enumerate(sub):
                t = conts[i][j]
                pred = logp[row, keep - 1 - len(t):keep - 1]  # position k predicts token k + 1
                scores[i][j] = float(pred.gather(-1, torch.tensor(t, device=pred.device)[:, None]).sum())
        results = []
        for cs, cc, sc in zip(cands, conts, scores):
            if self.length_normalise:
                sc = [s / len(t) for s, t in zip(sc, cc)]
            probs = torch.softmax(torch.tensor(sc, dtype=torch.float64), dim=0).tolist()
            order = sorted(range(len(cs)), key=lambda j: -sc[j])  # stable: ties go to the earlier candidate
            results.append({"answer": cs[order[0]], "top": [(cs[j], probs[j]) for j in order[:TOP_K]]})
        return results

    def _open(self, questions, images) -> list[dict[str, Any]]:
        _, ids, pixels = self._encode(questions, images)
        input_ids, mask, _ = _left_pad(ids, self.tokenizer.pad_token_id)
        gen = copy.deepcopy(self.model.generation_config)
        for attr in ("temperature", "top_p", "top_k", "min_p", "typical_p"):  # sampling settings: unused, not warned
            if hasattr(gen, attr):
                setattr(gen, attr, None)
        gen.do_sample, gen.num_beams, gen.max_new_tokens, gen.min_new_tokens = False, 1, self.max_new_tokens, None
        gen.pad_token_id = self.tokenizer.pad_token_id
        gen.eos_token_id = sorted(self.stop_ids) or None
        gen.output_logits, gen.return_dict_in_generate = True, True
        out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                  pixel_values=pixels.to(self.device, DTYPES[self.dtype]), generation_config=gen)
        new = out.sequences[:, input_ids.shape[1]:].cpu()
        logp = torch.stack([torch.log_softmax(x.float(), dim=-1) for x in out.logits], dim=1).cpu()  # (B, T, V)
        results = []
        for row in range(new.shape[0]):
            tokens = new[row].tolist()
            for k, t in enumerate(tokens):
                if t in self.stop_ids:
                    tokens = tokens[:k]
                    break
            lp = sum(float(logp[row, k, t]) for k, t in enumerate(tokens))
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            answer = (text.splitlines() or [""])[0].strip().lower()
            results.append({"answer": answer, "top": [(answer, math.exp(lp))]})
        return results


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask and position_ids (0 at each sequence's first real token) of left-padded sequences."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        if s:
            ids[row, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[row, width - len(s):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos

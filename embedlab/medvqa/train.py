"""Training a library model on Med-VQA records: one loop for every model, resumable, with image-centric batches.

    trained = train_model("mevf-ban", "cpu", train_records, output_dir="runs/vqa/mevf-ban-s0", seed=0,
                          eval_records=val_records)

What one run does, in order (each stage logged; stages are skipped on resume once done):
1. vocabularies from the training records only (question words, normalised answers); image bank of the training and
   evaluation images (imagebank.py); question inputs (word ids, or frozen text states for co-attention);
2. ``select: best`` or CR: a held-out part of the training records (``holdout``, 10 %, grouped so that twin
   questions -- same image, same text -- stay together) for checkpoint selection and CR's type classifier; the
   evaluation records are never used to choose anything;
3. ``cdae_mode: frozen``: the CDAE pre-trained on the training images (reconstruction of noised inputs), then its
   encoder frozen and its codes cached per image (the CPU profile); ``joint``: trained with the model, its
   reconstruction loss x ``ae_weight`` added (MEVF);
4. ``pretrain: multitask`` (MMQ substitute): each CNN pre-trained on the ``pretrain_tasks``: organ / modality / plane
   labels mined from the training QA (the organ field; answers to MODALITY and PLANE questions) and, as an option,
   ``instance``: which training image it is (each image its own class, seen under random shifts and contrast
   changes -- exemplar-CNN style instance discrimination, training images only);
5. CR: the question-type classifier trained, its epoch chosen on the held-out part;
   On ``train.device`` (``auto``: the GPU when there is one) the network, the image bank and each batch live there;
   the trained model is moved back to the CPU to be scored and saved.
6. the epochs: batches ``per-sample`` (``batch_size`` questions, the image side computed per question, as the official
   loops) or ``image`` (``batch_images`` images and all their questions, the image side computed once per image);
   MEVF's BCE on soft scores; Adamax/Adam/AdamW; schedule ``mevf`` (warm-up x0.5/1/1.5/2 over epochs 0-3, then x0.75
   every 2 epochs from 10), ``cosine`` or ``constant``; gradient clipping; bf16 autocast as an option; VQAMix as an
   option (lambda ~ Beta(a, a) drawn afresh for every batch from the run's generator, the partner a question of the
   same type in the batch, features and word embeddings mixed, target lambda^2 y_i + (1-lambda)^2 y_j).
   Note: VQAMix here mixes image features (after the encoders), not pixels, so that image-centric batches stay valid.
7. after each epoch a checkpoint (net, optimizer, generators, history) replaces the previous one: a stopped run
   resumes at the next epoch (a checkpoint of another model, settings, seed or data is refused, not resumed; so is
   a folder embedlab did not write, and a second training into a folder in use). The kept model is the last epoch
   (``select: last``, MEVF) or the best on the held-out part (``select: best``). ``model.json`` +
   ``model.safetensors`` + ``train_log.jsonl`` in the output folder.

It does not score evaluation splits (evaluate.py) or write results (jobs.py).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from ..atomic import atomic_path
from ..errors import ConfigError, DataError
from ..outputs import claim_folder, lock_folder
from ..settings import cache_dir
from .imagebank import ImageBank
from .models import TrainedModel, build_model, model_settings, save_model
from .models.network import CRNet, image_sizes
from .normalize import normalize_answer
from .records import VQARecord
from .splits import twin_key
from .vocab import AnswerVocab, QuestionVocab

log = logging.getLogger("embedlab.medvqa.train")
Progress = Callable[[float | None, str], None]


@dataclass
class Batchable:
    """Prepared tensors of a record list: question inputs, image rows, targets, closed flags, question types."""

    records: list[VQARecord]
    question: dict[str, torch.Tensor]
    image_rows: torch.Tensor
    targets: torch.Tensor
    closed: torch.Tensor
    types: list[str]
    device: torch.device = torch.device("cpu")  # where take() puts the batch (image rows stay on the CPU: indices)

    def take(self, idx: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]:
        d = self.device
        return ({k: v[idx].to(d) for k, v in self.question.items()}, self.image_rows[idx], self.targets[idx].to(d),
                self.closed[idx].to(d))


class QuestionInputs:
    """Turns question strings into the model's question inputs (word ids or frozen text states), memoised."""

    def __init__(self, settings: dict, vocab: QuestionVocab):
        self.settings, self.vocab, self._states = settings, vocab, None
        if settings["question"] == "frozen":
            from .models.textstates import TextStates

            self._states = TextStates(settings["text_encoder"], settings["max_length"])
            if self._states.dim != settings["text_dim"]:
                raise ConfigError(f"text encoder {settings['text_encoder']} gives {self._states.dim}-d states but "
                                  f"text_dim is {settings['text_dim']}")

    def __call__(self, questions: Sequence[str]) -> dict[str, torch.Tensor]:
        out = {"ids": self.vocab.encode(questions)}
        if self._states is not None:
            out.update(self._states.encode(questions))
        return out


def prepare(records: Sequence[VQARecord], bank: ImageBank, inputs: QuestionInputs, answers: AnswerVocab,
            device: torch.device | str = "cpu") -> Batchable:
    records = list(records)
    return Batchable(records, inputs([r.question for r in records]), bank.index(records),
                     answers.targets([r.answer for r in records]),
                     torch.tensor([r.closed for r in records], dtype=torch.bool),
                     [r.question_type or "OTHER" for r in records], torch.device(device))


def resolve_device(name: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; ``cpu``; ``cuda`` / ``cuda:N`` (an error without one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but no CUDA device is available here")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device must be auto, cpu or cuda[:N], got {name!r}") from None


def holdout_split(records: Sequence[VQARecord], fraction: float, seed: int) -> tuple[list, list]:
    """(fit, holdout): about ``fraction`` of the twin groups (same image, same question text) held out together."""
    groups: dict[tuple, list[VQARecord]] = defaultdict(list)
    for r in records:
        groups[twin_key(r)].append(r)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n_hold = max(1, round(fraction * len(keys)))
    held = set(keys[:n_hold])
    fit = [r for r in records if twin_key(r) not in held]
    hold = [r for r in records if twin_key(r) in held]
    return fit, hold


def lr_factor(schedule: str, epoch: int, epochs: int, step_frac: float = 0.0) -> float:
    if schedule == "mevf":
        if epoch < 4:
            return (0.5, 1.0, 1.5, 2.0)[epoch]
        return 2.0 * 0.75 ** sum(1 for e in range(10, epochs, 2) if e <= epoch)
    if schedule == "cosine":
        t = (epoch + step_frac) / max(epochs, 1)
        warm = 0.05
        return t / warm if t < warm else 0.5 * (1 + math.cos(math.pi * (t - warm) / (1 - warm)))
    if schedule == "constant":
        return 1.0
    raise ConfigError(f"unknown schedule {schedule!r} (mevf, cosine, constant)")


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamax":
        return torch.optim.Adamax(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r} (adamax, adam, adamw)")


def mix_partners(types: Sequence[str], same_type: bool, gen: torch.Generator) -> torch.Tensor:
    """A partner for every question: a random other question of the batch (of the same type when asked)."""
    n = len(types)
    perm = torch.arange(n)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(types):
        groups[t if same_type else ""].append(i)
    for members in groups.values():
        idx = torch.tensor(members)
        perm[idx] = idx[torch.randperm(len(members), generator=gen)]
    return perm


def _image_side(net, bank: ImageBank, rows: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
    pixels = {s: p[rows] for s, p in bank.pixels.items()}
    return net.encode_images(pixels, None if codes is None else codes[rows])


def forward_batch(net, bank: ImageBank, codes, question: dict, image_rows: torch.Tensor, *, per_sample: bool,
                  mix=None, closed=None) -> torch.Tensor:
    """Logits for a batch; the image side once per unique image (image-centric) or once per question."""
    if per_sample:
        regions = _image_side(net, bank, image_rows, codes)
    else:
        unique, inverse = torch.unique(image_rows, return_inverse=True)
        regions = _image_side(net, bank, unique, codes)[inverse]
    return net(regions, question, mix=mix, closed=closed)


@torch.no_grad()
def predict_logits(net, bank: ImageBank, codes, data: Batchable, batch: int = 256, bf16: bool = False,
                   closed: torch.Tensor | None = None) -> torch.Tensor:
    net.eval()
    out = []
    for start in range(0, len(data.records), batch):
        idx = torch.arange(start, min(start + batch, len(data.records)))
        q, rows, _, _ = data.take(idx)
        with torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = forward_batch(net, bank, codes, q, rows, per_sample=False,
                                   closed=None if closed is None else closed[idx])
        out.append(logits.float())
    return torch.cat(out)


def accuracy(logits: torch.Tensor, data: Batchable, answers: AnswerVocab) -> float:
    pred = logits.argmax(-1).cpu()
    gold = torch.tensor([answers.label(r.answer) for r in data.records])
    return float((pred == gold).float().mean())


class Trainer:
    def __init__(self, name: str, profile: str, train_records: Sequence[VQARecord], output_dir: str | Path, *,
                 seed: int = 0, eval_records: Sequence[VQARecord] = (), model_overrides: dict | None = None,
                 train_overrides: dict | None = None, progress: Progress | None = None, info: dict | None = None):
        self.name, self.profile, self.seed = name, profile, seed
        self.settings, self.cfg = model_settings(name, profile, model_overrides=model_overrides,
                                                 train_overrides=train_overrides)
        self.train_records = list(train_records)
        if not self.train_records:
            raise DataError("no training records")
        self.eval_records = list(eval_records)
        self.out = Path(output_dir)
        self.progress = progress or (lambda f, t: None)
        self.info = dict(info or {})
        self._check_cfg()

    def _check_cfg(self) -> None:
        c = self.cfg
        resolve_device(str(c["device"]))
        choices = {"batching": ("per-sample", "image"), "cdae_mode": ("joint", "frozen"), "select": ("last", "best"),
                   "pretrain": ("none", "multitask")}
        for key, allowed in choices.items():
            if c[key] not in allowed:
                raise ConfigError(f"train.{key} must be one of {', '.join(allowed)}, got {c[key]!r}")
        tasks = c["pretrain_tasks"]
        if not isinstance(tasks, (list, tuple)) or not tasks or set(tasks) - set(PRETRAIN_TASKS):
            raise ConfigError(f"train.pretrain_tasks must be a non-empty list of {', '.join(PRETRAIN_TASKS)}, "
                              f"got {tasks!r}")
        for key in ("epochs", "batch_size", "batch_images"):
            if int(c[key]) < 1:
                raise ConfigError(f"train.{key} must be at least 1, got {c[key]!r}")

    # -- the run -------------------------------------------------------------------------------------------------
    def run(self) -> TrainedModel:
        # a user's folder is refused before any work; a second training into the same folder stops at the lock
        claim_folder(self.out, "output_dir", "Med-VQA training run")
        lock = lock_folder(self.out, "output_dir", "embedlab Med-VQA training")
        try:
            return self._run()
        finally:
            lock.close()

    def signature(self) -> dict:
        """What a checkpoint must share with this run to be resumed by it: model, settings, training settings other
        than the number of epochs (extending a run is resuming it) and the threads or device, seed and data."""
        data = hashlib.sha256("\n".join(r.qid for r in self.train_records).encode()).hexdigest()[:16]
        train = {k: v for k, v in self.cfg.items() if k not in ("epochs", "threads", "device")}
        return json.loads(json.dumps({"model": self.name, "settings": self.settings, "train": train,
                                      "seed": self.seed, "train_qids": data}))

    def _check_resumable(self, state: dict, ckpt_file: Path) -> None:
        saved, now = state.get("run") or {}, self.signature()
        differs = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if differs:
            detail = [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in differs if k not in ("settings", "train")]
            for part in ("settings", "train"):
                a, b = saved.get(part) or {}, now.get(part) or {}
                detail += [f"{part}.{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
                           if a.get(k) != b.get(k)]
            raise ConfigError(f"{ckpt_file} belongs to another run ({'; '.join(detail[:4])}); it would be resumed "
                              f"with different settings: use another output_dir, or delete that checkpoint to "
                              f"start over")

    def _run(self) -> TrainedModel:
        c, s = self.cfg, self.settings
        torch.set_num_threads(max(1, int(c["threads"])))
        torch.manual_seed(self.seed)
        random.seed(self.seed)
        need_holdout = c["select"] == "best" or self.name == "cr"
        fit, hold = holdout_split(self.train_records, c["holdout"], self.seed) if need_holdout else \
            (self.train_records, [])
        main_records = fit if c["select"] == "best" else self.train_records
        self.questions = QuestionVocab.build(self.train_records, s["max_length"])
        self.answers = AnswerVocab.build(self.train_records)
        closed_answers = sorted({normalize_answer(r.answer) for r in self.train_records if r.closed})
        self.device = dev = resolve_device(c["device"])
        bank = ImageBank.build(self.train_records + self.eval_records, image_sizes(s))
        self.bank = bank.to(dev)
        inputs = QuestionInputs(s, self.questions)
        self.data = prepare(main_records, bank, inputs, self.answers, dev)
        self.fit_data = prepare(fit, bank, inputs, self.answers, dev) if hold else self.data
        self.hold_data = prepare(hold, bank, inputs, self.answers, dev) if hold else None
        self.net = build_model(self.name, s, self.questions, self.answers,
                               closed_answers if self.name == "cr" else None).to(dev)
        self.gen = torch.Generator().manual_seed(self.seed)
        self.rng = random.Random(self.seed)  # VQAMix's lambda: a fresh draw per batch, its state checkpointed
        self.lambdas: list[float] = []
        self.codes = None
        ckpt_file = self.out / "checkpoints" / "last.pt"
        state = torch.load(ckpt_file, weights_only=False, map_location=dev) if ckpt_file.is_file() else None
        history: list[dict] = []
        if state is None:
            self._pre_stages()
            start_epoch, best = 0, {"epoch": -1, "acc": -1.0, "state": None}
            self.opt = self._optimizer()
        else:
            self._check_resumable(state, ckpt_file)
            self.net.load_state_dict(state["net"])
            self._freeze_pre_trained()
            self.opt = self._optimizer()
            self.opt.load_state_dict(state["opt"])
            self.gen.set_state(state["gen"])
            self.rng.setstate(state["py_rng"])
            torch.set_rng_state(state["torch_rng"])
            start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
            log.info("resuming %s at epoch %d", self.out, start_epoch)
        for epoch in range(start_epoch, c["epochs"]):
            t0 = time.perf_counter()
            loss, seen = self._epoch(epoch)
            row = {"epoch": epoch, "loss": loss, "examples": seen, "seconds": time.perf_counter() - t0,
                   "lr": self.opt.param_groups[0]["lr"]}
            if self.hold_data is not None and c["select"] == "best":
                acc = accuracy(predict_logits(self.net, self.bank, self.codes, self.hold_data, bf16=c["bf16"]),
                               self.hold_data, self.answers)
                row["holdout_acc"] = acc
                if acc > best["acc"]:
                    best = {"epoch": epoch, "acc": acc,
                            "state": {k: v.clone() for k, v in self.net.state_dict().items()}}
            history.append(row)
            self._append_log(row)
            self._checkpoint(epoch, best, history)
            self.progress((epoch + 1) / c["epochs"], f"{self.name} epoch {epoch + 1}/{c['epochs']} loss {loss:.3f}")
        if c["select"] == "best" and best["state"] is not None:
            self.net.load_state_dict(best["state"])
        self.net.eval().cpu()  # evaluation and saving on the CPU
        info = {**self.info, "seed": self.seed, "epochs": c["epochs"], "train_questions": len(self.data.records),
                "holdout_questions": len(hold), "selected_epoch": best["epoch"] if c["select"] == "best"
                else c["epochs"] - 1, "history": history}
        trained = TrainedModel(self.name, self.profile, s, c, self.questions, self.answers, self.net,
                               closed_answers if self.name == "cr" else [], info)
        if self.codes is not None:
            trained.info["cdae_frozen"] = True
        save_model(self.out, trained)
        return trained

    # -- stages --------------------------------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.net.parameters() if p.requires_grad]
        return make_optimizer(self.cfg["optimizer"], params, self.cfg["lr"], self.cfg["weight_decay"])

    def _pre_stages(self) -> None:
        c = self.cfg
        if self.net.cdae is not None and c["cdae_mode"] == "frozen":
            self._pretrain_cdae()
        if c["pretrain"] == "multitask":
            self._pretrain_multitask()
        if isinstance(self.net, CRNet):
            self._train_type_classifier()
        self._freeze_pre_trained()

    def _train_images(self) -> torch.Tensor:
        return torch.unique(self.data.image_rows)

    def _pretrain_cdae(self) -> None:
        """Pre-train the CDAE on the training images, or load the result of an identical pre-training from the cache.

        Its outcome depends only on the training images, the CDAE settings, the epochs, the learning rate and the
        seed (its own initialisation, noise and order, under a forked RNG), so every model of one seed shares it:
        MEVF-SAN, MEVF-BAN, CR and MMQ pre-train it once between them, and a cached run equals a fresh one."""
        c, cdae = self.cfg, self.net.cdae
        size = self.settings["cdae_size"]
        pixels = self.bank.pixels[size][self._train_images()]
        ae_params = [*cdae.encoder.parameters(), *cdae.decoder.parameters()]
        key = hashlib.sha256(json.dumps({"size": size, "epochs": c["cdae_pretrain_epochs"], "lr": c["cdae_lr"],
                                         "seed": self.seed, "noise": cdae.noise, "batch": 32}).encode())
        key.update(pixels.cpu().numpy().tobytes())
        cached = cache_dir() / "medvqa" / "cdae" / f"{key.hexdigest()[:24]}.pt"
        if cached.is_file():
            try:
                saved = torch.load(cached, weights_only=True, map_location=self.device)
                with torch.no_grad():
                    for p, v in zip(ae_params, saved["params"]):
                        p.copy_(v)
                self._append_log({"stage": "cdae", "epochs": c["cdae_pretrain_epochs"], "mse": saved["mse"],
                                  "cached": str(cached)})
                return
            except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed, never trusted
                pass
        total = 0.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for module in [*cdae.encoder.modules(), *cdae.decoder.modules()]:
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            gen = torch.Generator().manual_seed(self.seed)
            opt = torch.optim.Adam(ae_params, lr=c["cdae_lr"])
            cdae.train()
            for epoch in range(c["cdae_pretrain_epochs"]):
                order = torch.randperm(len(pixels), generator=gen)
                total = 0.0
                for start in range(0, len(order), 32):
                    loss = cdae.reconstruction_loss(pixels[order[start: start + 32]])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(order[start: start + 32])
                self.progress(None, f"CDAE pre-training epoch {epoch + 1}/{c['cdae_pretrain_epochs']} "
                                    f"mse {total / len(order):.4f}")
        mse = total / max(len(pixels), 1)
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as tmp:
            torch.save({"params": [p.detach().cpu() for p in ae_params], "mse": mse}, tmp)
        self._append_log({"stage": "cdae", "epochs": c["cdae_pretrain_epochs"], "mse": mse})

    def _freeze_pre_trained(self) -> None:
        """Freeze what the pre-stages trained and the epochs must not change — the CDAE in ``frozen`` mode (its codes
        then cached per image) and CR's type classifier — after the pre-stages and after loading a checkpoint alike,
        so that a resumed run's optimizer holds the same parameters as the run that saved it."""
        frozen = []
        cdae = self.net.cdae
        if cdae is not None and self.cfg["cdae_mode"] == "frozen":
            frozen += [*cdae.encoder.parameters(), *cdae.decoder.parameters()]
            cdae.encoder.eval()
            self.codes = cdae_codes(cdae, self.bank.pixels[self.settings["cdae_size"]])
        if isinstance(self.net, CRNet):
            frozen += list(self.net.type_classifier.parameters())
        for p in frozen:
            p.requires_grad_(False)
            p.grad = None  # a stale pre-training gradient would count in the main loop's clipping norm

    def _pretrain_multitask(self) -> None:
        """Each CNN learns the ``pretrain_tasks`` of the training images: organ / modality / plane (labels mined from
        the training QA) and/or ``instance`` (which training image, under random shifts and contrast changes)."""
        tasks = list(self.cfg["pretrain_tasks"])
        labels = {t: v for t, v in mine_image_labels(self.data.records, self.data.image_rows).items() if t in tasks}
        if "instance" in tasks:
            own = sorted({int(r) for r in self.data.image_rows.tolist()})
            labels["instance"] = ([str(r) for r in own], {r: i for i, r in enumerate(own)})
        size = self.settings["cnn_size"]
        for k, cnn in enumerate(self.net.cnns):
            heads = torch.nn.ModuleDict({task: torch.nn.Linear(cnn.out_dim, len(classes))
                                         for task, (classes, _) in labels.items() if len(classes) > 1}).to(self.device)
            if not heads:
                return
            opt = torch.optim.Adam(list(cnn.parameters()) + list(heads.parameters()), lr=1e-3)
            cnn.train()
            rows = torch.tensor(sorted({int(r) for _, (_, m) in labels.items() for r in m}))
            for _ in range(self.cfg["pretrain_epochs"]):
                order = rows[torch.randperm(len(rows), generator=self.gen)]
                for start in range(0, len(order), 32):
                    batch = order[start: start + 32]
                    pixels = self.bank.pixels[size][batch]
                    if "instance" in heads:  # the identity must survive small shifts and contrast changes
                        pixels = augment(pixels, self.gen)
                    feats = cnn(pixels).mean(1)
                    loss = feats.new_zeros(())
                    for task, head in heads.items():
                        mapping = labels[task][1]
                        have = [i for i, r in enumerate(batch.tolist()) if r in mapping]
                        if have:
                            target = torch.tensor([mapping[batch[i].item()] for i in have], device=self.device)
                            loss = loss + F.cross_entropy(head(feats[have]), target)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            self.progress(None, f"multi-task pre-training of CNN {k + 1}/{len(self.net.cnns)} done")
        self._append_log({"stage": "multitask", "epochs": self.cfg["pretrain_epochs"],
                          "labels": {t: len(m) for t, (_, m) in labels.items()}})

    def _train_type_classifier(self) -> None:
        clf, c = self.net.type_classifier, self.cfg
        fit, hold = self.fit_data, self.hold_data
        opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
        best = (-1.0, -1, None)
        for epoch in range(c["type_epochs"]):
            clf.train()
            order = torch.randperm(len(fit.records), generator=self.gen)
            for start in range(0, len(order), 64):
                idx = order[start: start + 64]
                q, _, _, closed = fit.take(idx)
                loss = F.cross_entropy(clf(q["ids"]), closed.long())
                opt.zero_grad()
                loss.backward()
                opt.step()
            clf.eval()
            with torch.no_grad():
                acc = float((clf(hold.question["ids"].to(self.device)).argmax(-1).bool().cpu() == hold.closed)
                            .float().mean())
            if acc > best[0]:
                best = (acc, epoch, {k: v.clone() for k, v in clf.state_dict().items()})
        clf.load_state_dict(best[2])
        self._append_log({"stage": "type-classifier", "holdout_acc": best[0], "selected_epoch": best[1],
                          "holdout_questions": len(hold.records)})

    def _epoch(self, epoch: int) -> tuple[float, int]:
        c, net = self.cfg, self.net
        net.train()
        if self.codes is not None:
            net.cdae.encoder.eval()
        if isinstance(net, CRNet):
            net.type_classifier.eval()
        batches = list(self._batches())
        total, seen = 0.0, 0
        for b, idx in enumerate(batches):
            factor = lr_factor(c["schedule"], epoch, c["epochs"], b / len(batches))
            for g in self.opt.param_groups:
                g["lr"] = c["lr"] * factor
            mix = None
            if c["vqamix"]:
                lam = self.rng.betavariate(c["vqamix_alpha"], c["vqamix_alpha"])
                self.lambdas.append(lam)
                mix = (mix_partners([self.data.types[i] for i in idx.tolist()], c["vqamix_same_type"], self.gen), lam)
            loss = train_step(net, self.opt, self.bank, self.codes, self.data, idx, c, mix=mix)
            total += loss * len(idx)
            seen += len(idx)
        return total / max(seen, 1), seen

    def _batches(self):
        c = self.cfg
        return batch_order(self.data.image_rows, c["batching"], c["batch_size"], c["batch_images"], self.gen)

    # -- records ---------------------------------------------------------------------------------------------------
    def _append_log(self, row: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "train_log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def _checkpoint(self, epoch: int, best: dict, history: list) -> None:
        folder = self.out / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        state = {"epoch": epoch, "net": self.net.state_dict(), "opt": self.opt.state_dict(),
                 "gen": self.gen.get_state(), "py_rng": self.rng.getstate(), "torch_rng": torch.get_rng_state(),
                 "best": best, "history": history, "run": self.signature()}
        with atomic_path(folder / "last.pt") as tmp:
            torch.save(state, tmp)


def batch_order(image_rows: torch.Tensor, batching: str, batch_size: int, batch_images: int,
                gen: torch.Generator):
    """One epoch's batches (index tensors): ``per-sample``, ``batch_size`` questions in a random order (the official
    loops); ``image``, ``batch_images`` images in a random order with all their questions (image-centric)."""
    n = len(image_rows)
    if batching == "per-sample":
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            yield order[start: start + batch_size]
        return
    by_image: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(image_rows.tolist()):
        by_image[r].append(i)
    images = sorted(by_image)
    order = torch.randperm(len(images), generator=gen).tolist()
    for start in range(0, len(order), batch_images):
        yield torch.tensor([i for j in order[start: start + batch_images] for i in by_image[images[j]]])


def train_step(net, opt: torch.optim.Optimizer, bank: ImageBank, codes: torch.Tensor | None, data: Batchable,
               idx: torch.Tensor, cfg: dict, mix=None) -> float:
    """One optimisation step on the questions ``idx`` (learning rate as set on ``opt``): forward (bf16 autocast when
    ``cfg["bf16"]``), MEVF's loss (VQAMix targets when ``mix`` is given), the CDAE's reconstruction loss x
    ``ae_weight`` when it trains jointly, backward, clipping over the trainable parameters, update. Returns the loss."""
    per_sample = cfg["batching"] == "per-sample"
    q, rows, targets, closed = data.take(idx)
    if mix is not None:
        perm, lam = mix
        targets = lam ** 2 * targets + (1 - lam) ** 2 * targets[perm]
    with torch.autocast(targets.device.type, dtype=torch.bfloat16, enabled=bool(cfg["bf16"])):
        logits = forward_batch(net, bank, codes, q, rows, per_sample=per_sample, mix=mix, closed=closed)
    loss = net.loss(logits.float(), targets, closed)
    if net.cdae is not None and codes is None and cfg["ae_weight"] > 0:
        img = bank.pixels[net.settings["cdae_size"]][rows if per_sample else torch.unique(rows)]
        loss = loss + cfg["ae_weight"] * net.cdae.reconstruction_loss(img)
    opt.zero_grad()
    loss.backward()
    if cfg["clip"]:
        torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], cfg["clip"])
    opt.step()
    return float(loss.detach())


PRETRAIN_TASKS = ("organ", "modality", "plane", "instance")


def augment(pixels: torch.Tensor, gen: torch.Generator, shift: float = 0.1, contrast: float = 0.2) -> torch.Tensor:
    """Each image shifted by up to ``shift`` of its side (edges replicated) and its contrast scaled by up to
    +-``contrast`` around its mean; drawn from ``gen`` (a resumed run draws the same)."""
    n, _, h, w = pixels.shape
    pad = max(1, round(shift * h))
    padded = F.pad(pixels, (pad, pad, pad, pad), mode="replicate")
    offs = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen).tolist()
    out = torch.stack([padded[i, :, dy: dy + h, dx: dx + w] for i, (dy, dx) in enumerate(offs)])
    scale = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * contrast
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return (out - mean) * scale.to(out) + mean


@torch.no_grad()
def cdae_codes(cdae, pixels: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """The (frozen) CDAE encoder's codes of every image, computed once and indexed per batch afterwards."""
    return torch.cat([cdae.codes(pixels[i: i + batch]) for i in range(0, len(pixels), batch)])


def mine_image_labels(records: Sequence[VQARecord], rows: torch.Tensor) -> dict[str, tuple[list[str], dict]]:
    """Per-image labels from the training QA: organ (field), modality and plane (answers to those question types).
    Returns task -> (classes, {image row: class index}); an image with conflicting answers takes the most common."""
    votes: dict[str, dict[int, list[str]]] = {"organ": defaultdict(list), "modality": defaultdict(list),
                                              "plane": defaultdict(list)}
    for r, row in zip(records, rows.tolist()):
        if r.organ:
            votes["organ"][row].append(r.organ)
        if r.question_type in ("MODALITY", "PLANE") and not r.closed:
            votes[r.question_type.lower()][row].append(normalize_answer(r.answer))
    out = {}
    for task, per_image in votes.items():
        chosen = {row: max(set(v), key=lambda a, v=v: (v.count(a), a)) for row, v in per_image.items()}
        classes = sorted(set(chosen.values()))
        out[task] = (classes, {row: classes.index(a) for row, a in chosen.items()})
    return out


def train_model(name: str, profile: str, train_records: Sequence[VQARecord], output_dir: str | Path, **kw) \
        -> TrainedModel:
    return Trainer(name, profile, train_records, output_dir, **kw).run()

"""Med-VQA training throughput of MEVF+BAN: per-sample vs image-centric batches (issue 15).

    EMBEDLAB_DATA=/work/shared/data HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/medvqa_train.py \
        [--threads 2] [--steps 2] [--repeats 3] [--hidden 512] [--out docs/results/medvqa_train_speed.json]

What it measures: training examples (QA pairs) per second of ``mevf-ban`` on real VQA-RAD ``val-train`` batches, where
a step is the library's ``train_step`` (what ``Trainer._epoch`` runs): ``forward_batch`` + ``net.loss`` (+ the CDAE's
``reconstruction_loss`` x ``ae_weight`` when the CDAE trains jointly) + backward + clipping (0.25) + an Adamax step.
Settings:

1. ``per-sample, joint CDAE`` -- MEVF's official loop: shuffled batches of 32 QA pairs (the library's ``per-sample``
   batches), both image encoders (MAML CNN at 84 px, CDAE at 128 px) and the CDAE's reconstruction loss x 0.001 run
   for every QA pair (``per_sample=True``);
2. ``image-centric, joint CDAE`` -- the same 32-QA batches, the image side once per unique image of the batch
   (``per_sample=False``) and the reconstruction loss on the unique images (as ``Trainer`` does for ``image``);
2b. ``image-grouped, joint CDAE`` -- the ``cpu`` profile's batches (8 images with all their questions) with the CDAE
   still joint: separates what grouping the batch by image buys from what freezing the CDAE buys;
3. ``image-grouped, frozen CDAE`` -- the ``cpu`` profile: CDAE encoder and decoder frozen, codes computed once per
   image (``cdae_codes``, timed: the one-time cost), batches of 8 images with all their questions; in fp32
   and with bf16 autocast (the CPU has AVX-512-BF16). The CDAE pre-training the ``cpu`` profile runs before freezing
   (``cdae_pretrain_epochs`` epochs of reconstruction on the training images) is estimated from ``--pretrain-batches``
   timed batches of that loop.

Settings 1 and 2 run at the ``paper`` model sizes (hidden 1024, 600-d word vectors, classifier 2048) and at the ``cpu``
model sizes (hidden ``--hidden``, default 512, 300-d word vectors, classifier 1024), which are the sizes of settings 2b
and 3, so that every ratio compares the same network. Batches are the library's (``batch_order``, seed 0); every
setting runs the same ``--steps`` batches in each of ``--repeats`` rounds, the settings alternating within a round
(their order rotated each round), after one warm-up step each; examples/s is the median over rounds, the ratio to the
per-sample loop (same sizes) the median over rounds of that round's ratio. Each setting has
its own network (same seed, same initial weights) and optimizer. Absolute numbers depend on the machine's load (the
ratios between settings measured alternately in one process are what counts); the load average is recorded.

Same outputs: before timing, in eval mode (BatchNorm on running statistics, dropout off), per-sample and image-centric
give the same VQA loss (relative difference <= 1e-5) and the same gradients (max abs difference <= 1e-5) on one 32-QA
batch and one 8-image batch, for the joint and the frozen network; the script fails if not. Two differences are
expected and printed: in train mode the MAML CNN's BatchNorm normalises with the batch's statistics, which differ when
an image appears once (image-centric) or once per question (per-sample) -- with BatchNorm in eval mode the train-mode
losses (same dropout masks) are equal again; and the reconstruction loss is a mean over the batch's images, each image
counted once per question (per-sample) or once (image-centric), so its value differs slightly.

Writes every round's numbers, the machine (torch, threads, cpu count, load average at start and end), the command, the
steps and the date to ``--out`` (atomically).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from embedlab.medvqa.datasets import load_dataset
from embedlab.medvqa.imagebank import ImageBank
from embedlab.medvqa.models import build_model, model_settings
from embedlab.medvqa.train import (Batchable, QuestionInputs, batch_order, cdae_codes, forward_batch, make_optimizer,
                                   prepare, train_step)
from embedlab.medvqa.vocab import AnswerVocab, QuestionVocab

ROOT = Path(__file__).resolve().parents[1]
MODEL = "mevf-ban"
TOL = 1e-5


@dataclass
class Arm:
    key: str
    setting: str
    sizes: str  # "paper" or "cpu" model sizes
    hidden: int
    per_sample: bool
    batching: str  # "per-sample" (32 QA pairs) or "image" (8 images with all their questions)
    cdae: str  # "joint" or "frozen"
    bf16: bool = False
    net: torch.nn.Module | None = None
    opt: torch.optim.Optimizer | None = None
    codes: torch.Tensor | None = None
    rounds: list[dict] = field(default_factory=list)


def model_cfg(sizes: str, hidden: int) -> tuple[dict, dict]:
    return model_settings(MODEL, sizes, model_overrides={"hidden": hidden})


def library_batches(records, data: Batchable, batching: str, seed: int) -> list[torch.Tensor]:
    """The trainer's own batches of the given kind (``batch_order``, first epoch, seed ``seed``)."""
    _, train = model_settings(MODEL, "cpu")
    return list(batch_order(data.image_rows, batching, train["batch_size"], train["batch_images"],
                            torch.Generator().manual_seed(seed)))


def freeze(net, bank: ImageBank, settings: dict) -> tuple[torch.Tensor, float]:
    """The cpu profile's freezing: the CDAE codes of every image (``cdae_codes``); returns (codes, seconds)."""
    t0 = time.perf_counter()
    codes = cdae_codes(net.cdae, bank.pixels[settings["cdae_size"]])
    return codes, time.perf_counter() - t0


def build_arm(arm: Arm, qv: QuestionVocab, av: AnswerVocab, bank: ImageBank, seed: int, train: dict) -> float | None:
    s, _ = model_cfg(arm.sizes, arm.hidden)
    torch.manual_seed(seed)
    arm.net = build_model(MODEL, s, qv, av)
    code_seconds = None
    if arm.cdae == "frozen":
        arm.codes, code_seconds = freeze(arm.net, bank, s)
    params = [p for p in arm.net.parameters() if p.requires_grad]
    arm.opt = make_optimizer(train["optimizer"], params, train["lr"], train["weight_decay"])
    return code_seconds


def step(arm: Arm, data: Batchable, bank: ImageBank, idx: torch.Tensor, train: dict) -> None:
    """One step of the library's own ``train_step`` (constant lr, no VQAMix), in the arm's batching and precision."""
    arm.net.train()
    if arm.codes is not None:
        arm.net.cdae.encoder.eval()
    cfg = {**train, "batching": "per-sample" if arm.per_sample else "image", "bf16": arm.bf16}
    train_step(arm.net, arm.opt, bank, arm.codes, data, idx, cfg)


def _vqa_loss(net, data, bank, codes, idx, per_sample: bool) -> torch.Tensor:
    q, rows, targets, closed = data.take(idx)
    return net.loss(forward_batch(net, bank, codes, q, rows, per_sample=per_sample, closed=closed), targets, closed)


def same_outputs(label: str, net, data: Batchable, bank: ImageBank, codes, idx: torch.Tensor, ae_weight: float) -> dict:
    """Eval mode: per-sample vs image-centric loss and gradients (must agree); train mode: the expected differences."""
    net = copy.deepcopy(net)
    net.eval()
    losses, grads = [], []
    for per_sample in (True, False):
        net.zero_grad(set_to_none=True)
        loss = _vqa_loss(net, data, bank, codes, idx, per_sample)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append({n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None})
    if grads[0].keys() != grads[1].keys():
        raise SystemExit(f"FAIL {label}: different parameters got gradients")
    rel = abs(losses[0] - losses[1]) / max(abs(losses[0]), 1e-12)
    max_diff = max(float((grads[0][n] - grads[1][n]).abs().max()) for n in grads[0])
    max_grad = max(float(g.abs().max()) for g in grads[0].values())
    rows = data.image_rows[idx]
    out = {"batch": label, "questions": len(idx), "unique_images": int(torch.unique(rows).numel()),
           "loss_per_sample": losses[0], "loss_image_centric": losses[1], "loss_rel_diff": rel,
           "grad_max_abs_diff": max_diff, "grad_max_abs": max_grad, "params_with_grad": len(grads[0])}
    # train mode, same dropout masks (same seed before each forward): BatchNorm's batch statistics differ ...
    train_losses, bn_eval_losses = [], []
    for per_sample in (True, False):
        for bn_eval, dest in ((False, train_losses), (True, bn_eval_losses)):
            m = copy.deepcopy(net).train()
            if codes is not None:
                m.cdae.encoder.eval()
            if bn_eval:
                for mod in m.modules():
                    if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                        mod.eval()
            torch.manual_seed(1234)
            with torch.no_grad():
                dest.append(float(_vqa_loss(m, data, bank, codes, idx, per_sample)))
    out["train_mode_loss_rel_diff"] = abs(train_losses[0] - train_losses[1]) / abs(train_losses[0])
    out["train_mode_bn_eval_loss_rel_diff"] = abs(bn_eval_losses[0] - bn_eval_losses[1]) / abs(bn_eval_losses[0])
    # ... and the reconstruction loss weights images by their questions (per-sample) or once each (image-centric)
    if codes is None and net.cdae is not None:
        px = bank.pixels[net.settings["cdae_size"]]
        with torch.no_grad():
            r_ps, r_ic = (float(net.cdae.reconstruction_loss(px[r])) for r in (rows, torch.unique(rows)))
        out["recon_per_sample"], out["recon_image_centric"] = r_ps, r_ic
        out["recon_weighted_rel_diff"] = ae_weight * abs(r_ps - r_ic) / (losses[0] + ae_weight * r_ps)
    ok = rel <= TOL and max_diff <= TOL
    print(f"  {label}: {len(idx)} questions / {out['unique_images']} images | eval mode: loss "
          f"{losses[0]:.6f} vs {losses[1]:.6f} (rel diff {rel:.1e}), gradients max |diff| {max_diff:.1e} "
          f"over {len(grads[0])} tensors (max |grad| {max_grad:.1e}) -> {'OK' if ok else 'FAIL'}")
    print(f"    train mode (same dropout masks): loss rel diff {out['train_mode_loss_rel_diff']:.1e} "
          f"(BatchNorm batch statistics); with BatchNorm in eval: {out['train_mode_bn_eval_loss_rel_diff']:.1e}"
          + (f"; reconstruction mse {out['recon_per_sample']:.5f} (per question) vs {out['recon_image_centric']:.5f}"
             f" (per image), {out['recon_weighted_rel_diff']:.1e} of the total loss" if "recon_per_sample" in out
             else ""))
    if not ok:
        raise SystemExit(f"FAIL {label}: per-sample and image-centric disagree in eval mode (loss rel diff {rel:.2e}, "
                         f"grad max abs diff {max_diff:.2e}, tolerance {TOL:g})")
    return out


def pretrain_batch_seconds(net, bank: ImageBank, images: torch.Tensor, batches: int, lr: float) -> list[float]:
    """Seconds per batch of the cpu profile's CDAE pre-training (``Trainer._pretrain_cdae``: Adam, 32 images)."""
    cdae = copy.deepcopy(net.cdae)
    for p in cdae.parameters():  # the copy of a frozen CDAE: trainable again, as before freezing
        p.requires_grad_(True)
    pixels = bank.pixels[net.settings["cdae_size"]][images]
    opt = torch.optim.Adam(cdae.parameters(), lr=lr)
    cdae.train()
    out = []
    for b in range(batches + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        loss = cdae.reconstruction_loss(pixels[b * 32: (b + 1) * 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if b:
            out.append(time.perf_counter() - t0)
    return out


def write_json_atomic(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per setting per round (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds; examples/s is their median (default 3)")
    ap.add_argument("--hidden", type=int, default=512, help="hidden size of the cpu-size runs (default 512)")
    ap.add_argument("--pretrain-batches", type=int, default=2,
                    help="timed batches of the CDAE pre-training, for its estimate (default 2; 0 skips it)")
    ap.add_argument("--dataset", default="vqa-rad")
    ap.add_argument("--split", default="val-train")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "medvqa_train_speed.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    t_start = time.perf_counter()

    records = load_dataset(args.dataset, args.split)
    paper_s, paper_train = model_settings(MODEL, "paper")
    cpu_s, cpu_train = model_cfg("cpu", args.hidden)
    if paper_s["max_length"] != cpu_s["max_length"]:
        raise SystemExit("paper and cpu sizes tokenise questions differently; this script assumes one question input")
    bank = ImageBank.build(records, sorted({paper_s["cnn_size"], paper_s["cdae_size"]}))
    qv, av = QuestionVocab.build(records, paper_s["max_length"]), AnswerVocab.build(records)
    data = prepare(records, bank, QuestionInputs(paper_s, qv), av)
    n_images = int(torch.unique(data.image_rows).numel())
    batches = {kind: library_batches(records, data, kind, args.seed)[: args.steps + 1]
               for kind in ("per-sample", "image")}
    if any(len(b) < args.steps + 1 for b in batches.values()):
        raise SystemExit(f"--steps {args.steps} is more than an epoch holds")
    print(f"{args.dataset} {args.split}: {len(records)} questions over {n_images} images; {args.threads} threads; "
          f"torch {torch.__version__}; load average {load_start[0]:.2f}")
    for key in ("optimizer", "lr", "clip", "ae_weight", "batch_size"):
        if paper_train[key] != cpu_train[key]:
            raise SystemExit(f"paper and cpu profiles differ in {key}; this script assumes they do not")

    h_paper, h_cpu = paper_s["hidden"], args.hidden
    official = "1 per-sample, joint CDAE (official loop)"
    arms = [
        Arm("ps-joint-paper", official, "paper", h_paper, True, "per-sample", "joint"),
        Arm("ic-joint-paper", "2 image-centric, joint CDAE", "paper", h_paper, False, "per-sample", "joint"),
        Arm("ps-joint-cpu", official, "cpu", h_cpu, True, "per-sample", "joint"),
        Arm("ic-joint-cpu", "2 image-centric, joint CDAE", "cpu", h_cpu, False, "per-sample", "joint"),
        Arm("grouped-joint-cpu", "2b image-grouped, joint CDAE", "cpu", h_cpu, False, "image", "joint"),
        Arm("grouped-frozen-cpu-fp32", "3 image-grouped, frozen CDAE, cached codes (fp32)", "cpu", h_cpu, False,
            "image", "frozen"),
        Arm("grouped-frozen-cpu-bf16", "3 image-grouped, frozen CDAE, cached codes (bf16 autocast)", "cpu", h_cpu,
            False, "image", "frozen", bf16=True),
    ]
    code_seconds = []
    for arm in arms:
        sec = build_arm(arm, qv, av, bank, args.seed, paper_train)
        if sec is not None:
            code_seconds.append(sec)
    print(f"one-time cost of the frozen CDAE's codes ({len(bank)} images, Trainer._freeze_cdae): "
          + ", ".join(f"{s:.2f} s" for s in code_seconds))
    pre = []
    if args.pretrain_batches:
        frozen = next(a for a in arms if a.cdae == "frozen")
        pre = pretrain_batch_seconds(frozen.net, bank, torch.unique(data.image_rows), args.pretrain_batches,
                                     cpu_train["cdae_lr"])
    pre_batches_per_epoch = math.ceil(n_images / 32)
    pre_estimate = (cpu_train["cdae_pretrain_epochs"] * pre_batches_per_epoch * statistics.median(pre)) if pre else None
    if pre:
        print(f"CDAE pre-training (cpu profile, {cpu_train['cdae_pretrain_epochs']} epochs x {pre_batches_per_epoch} "
              f"batches of 32 images): {statistics.median(pre):.2f} s/batch -> about {pre_estimate:.0f} s once")

    print("same outputs (eval mode; tolerance 1e-5):")
    checks = []
    for arm_key in ("ic-joint-paper", "grouped-frozen-cpu-fp32"):
        arm = next(a for a in arms if a.key == arm_key)
        for kind, label in (("per-sample", "32-QA batch"), ("image", "8-image batch")):
            name = f"{arm.cdae} CDAE, {arm.sizes} sizes, {label}"
            checks.append(same_outputs(name, arm.net, data, bank, arm.codes, batches[kind][0],
                                       paper_train["ae_weight"]))

    for arm in arms:  # warm-up: one step each, on the first batch
        step(arm, data, bank, batches[arm.batching][0], paper_train)
    for r in range(args.repeats):
        order = arms[r % len(arms):] + arms[: r % len(arms)]
        for arm in order:
            times, questions, images = [], [], []
            for idx in batches[arm.batching][1:]:
                t0 = time.perf_counter()
                step(arm, data, bank, idx, paper_train)
                times.append(time.perf_counter() - t0)
                questions.append(len(idx))
                images.append(int(torch.unique(data.image_rows[idx]).numel()))
            arm.rounds.append({"round": r, "step_seconds": times, "questions": questions, "unique_images": images,
                               "examples_per_s": sum(questions) / sum(times), "load_average": os.getloadavg()[0]})
        print(f"round {r + 1}/{args.repeats} done ({time.perf_counter() - t_start:.0f} s, load average "
              f"{os.getloadavg()[0]:.2f})")

    base = {a.sizes: a for a in arms if a.per_sample}
    rows = []
    for arm in arms:
        eps = statistics.median(x["examples_per_s"] for x in arm.rounds)
        ref_rounds = base[arm.sizes].rounds  # ratio: median over rounds of the same round's ratio (same load)
        ratio = statistics.median(x["examples_per_s"] / y["examples_per_s"] for x, y in zip(arm.rounds, ref_rounds))
        q = [n for x in arm.rounds[:1] for n in x["questions"]]
        im = [n for x in arm.rounds[:1] for n in x["unique_images"]]
        rows.append({"key": arm.key, "setting": arm.setting, "sizes": arm.sizes, "hidden": arm.hidden,
                     "bf16": arm.bf16, "questions_per_step": sum(q) / len(q),
                     "unique_images_per_step": sum(im) / len(im),
                     "examples_per_s": eps, "ratio_vs_per_sample": ratio,
                     "seconds_per_epoch": len(records) / eps, "rounds": arm.rounds})
    print()
    print(f"| setting | sizes (hidden) | questions / unique images per step | examples/s | vs per-sample | "
          f"s per epoch ({len(records)} q) |")
    print("|---|---|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['setting']} | {row['sizes']} ({row['hidden']}) | {row['questions_per_step']:.1f} / "
              f"{row['unique_images_per_step']:.1f} | {row['examples_per_s']:.2f} | "
              f"{row['ratio_vs_per_sample']:.2f}x | {row['seconds_per_epoch']:.0f} |")
    load_end = os.getloadavg()
    result = {
        "benchmark": "medvqa_train", "model": MODEL, "dataset": args.dataset, "split": args.split,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": vars(args), "steps_per_round": args.steps, "rounds": args.repeats, "warmup_steps": 1,
        "questions": len(records), "images": n_images,
        "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                    "platform": platform.platform(), "load_average_start": load_start, "load_average_end": load_end},
        "paper_sizes": {k: paper_s[k] for k in ("hidden", "emb_dim", "classifier_hidden")},
        "cpu_sizes": {k: cpu_s[k] for k in ("hidden", "emb_dim", "classifier_hidden")},
        "train": {k: paper_train[k] for k in ("optimizer", "lr", "clip", "ae_weight", "batch_size")},
        "cpu_batch_images": cpu_train["batch_images"],
        "frozen_codes_seconds": code_seconds,
        "cdae_pretrain": {"batch_seconds": pre, "epochs": cpu_train["cdae_pretrain_epochs"],
                          "batches_per_epoch": pre_batches_per_epoch, "estimate_seconds": pre_estimate},
        "same_outputs": checks, "rows": rows, "total_seconds": time.perf_counter() - t_start,
    }
    write_json_atomic(Path(args.out), result)
    print(f"\nload average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end; "
          f"{result['total_seconds']:.0f} s in all; wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

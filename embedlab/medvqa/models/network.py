"""The two network shapes every library model is an instance of: ``FusionNet`` (one answer head) and ``CRNet``.

``FusionNet(settings, question_vocab_size, answers)``: image encoders (a MAML-style CNN, optionally several as MMQ,
and/or MEVF's CDAE; their region features concatenated) -> a question encoder (word RNN or frozen text states) -> a
fusion (SAN, BAN, co-attention) -> a classifier over the train answer vocabulary. ``settings`` is one flat dict (the
model part of a profile, definitions.py), so that a saved model rebuilds from its JSON.

The image side is split from the rest so that a trainer computes it once per unique image (image-centric batches):
``encode_images(pixels, cdae_codes)`` -> regions (N_images, R, D); ``forward(regions, question, mix, closed)`` ->
logits over every answer, with ``regions`` already indexed per question. ``closed`` (a bool per question) is used only
by CR. The CDAE's reconstruction loss and pre-training live in train.py.

``CRNet`` (conditional reasoning, Zhan et al. 2020): the same image and question encoders, two BAN branches with
their own classifiers over the closed and the open answers of the training set, a question-conditioned gate on each
branch's joint vector, and a question-type classifier (GRU + gated word attention -> closed/open) trained before the
main training and selected on a held-out part of the training split (never on the evaluation split). During
training questions go to their branch by the dataset's answer_type; at prediction by the classifier.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from . import parts

NEG = -1e4  # logit of an answer a branch cannot give (sigmoid ~ 0, softmax ~ 0)


def image_sizes(settings: dict) -> list[int]:
    """The square image sizes a model with these settings reads (the image bank loads each once)."""
    sizes = [settings["cnn_size"]] if settings["n_cnn"] else []
    return sizes + ([settings["cdae_size"]] if settings["cdae"] else [])


class FusionNet(nn.Module):
    def __init__(self, settings: dict, question_vocab_size: int, answers: Sequence[str], closed_answers=None):
        super().__init__()
        self.settings = dict(settings)
        s = self.settings
        if s.get("image_prior") and isinstance(self, CRNet):
            raise ValueError("image_prior is a FusionNet option (CR has its own branch heads)")
        self.n_answers = len(answers)
        self.cnns = nn.ModuleList(parts.MAMLCNN(s["cnn_channels"], s["cnn_regions"]) for _ in range(s["n_cnn"]))
        self.cdae = parts.CDAE(s["cdae_size"], s["cdae_dim"]) if s["cdae"] else None
        v_dim = s["cnn_channels"] * s["n_cnn"] + (s["cdae_dim"] if s["cdae"] else 0)
        if v_dim == 0:
            raise ValueError("a model needs an image encoder (n_cnn >= 1 or cdae)")
        if s["question"] == "rnn":
            self.question = parts.WordRNN(question_vocab_size, s["emb_dim"], s["hidden"], s["rnn"])
        else:
            self.question = parts.FrozenStates(s["text_dim"], s["hidden"])
        self.v_dim = v_dim
        # optional LayerNorm of each region's features: from-scratch CNN features differ little between images in
        # scale terms, and the fusion can then learn to ignore them (docs/medvqa.md, first measurements)
        self.image_norm = nn.LayerNorm(v_dim) if s.get("image_norm") else None
        self.build_heads(s, v_dim, answers, closed_answers)
        # optional image answer prior (late fusion): logits += MLP(mean region). VQA-RAD's evaluation images occur in
        # training, so which answers go with an image is learnable from the image alone; the fusion then only has to
        # pick among them by the question (docs/medvqa.md, tuning). The image-disjoint split shows what it is worth
        # on unseen images.
        self.image_prior = None
        if s.get("image_prior"):
            self.image_prior = nn.Sequential(nn.Linear(v_dim, s["hidden"]), nn.ReLU(), nn.Dropout(s["dropout"]),
                                             nn.Linear(s["hidden"], len(answers)))

    # -- construction -------------------------------------------------------------------------------------------
    def make_fusion(self, s: dict, v_dim: int) -> nn.Module:
        if s["fusion"] == "san":
            return parts.SAN(v_dim, s["hidden"], s["hidden"], s["stacks"], s["dropout"])
        if s["fusion"] == "ban":
            return parts.BAN(v_dim, s["hidden"], s["glimpses"], s["rank"], s["ban_dropout"])
        if s["fusion"] == "coattention":
            return parts.CoAttention(v_dim, s["hidden"], s["layers"], s["heads"], s["ban_dropout"])
        raise ValueError(f"unknown fusion {s['fusion']!r} (san, ban, coattention)")

    def build_heads(self, s: dict, v_dim: int, answers: Sequence[str], closed_answers) -> None:
        self.fusion = self.make_fusion(s, v_dim)
        self.classifier = parts.Classifier(s["hidden"], s["classifier_hidden"], len(answers), s["dropout"])

    # -- image side -----------------------------------------------------------------------------------------------
    def encode_images(self, pixels: dict[int, torch.Tensor], cdae_codes: torch.Tensor | None = None) -> torch.Tensor:
        s = self.settings
        feats = [cnn(pixels[s["cnn_size"]]) for cnn in self.cnns]
        if self.cdae is not None:
            code = self.cdae(pixels.get(s["cdae_size"]), codes=cdae_codes)  # (N, 1, d)
            regions = feats[0].shape[1] if feats else 1
            feats.append(code.expand(-1, regions, -1))
        regions = torch.cat(feats, dim=-1)
        return self.image_norm(regions) if self.image_norm is not None else regions

    # -- question side and fusion -----------------------------------------------------------------------------
    def joint(self, regions: torch.Tensor, question: dict, mix: parts.Mix = None) -> torch.Tensor:
        states, mask = self.question(question, mix)
        return self.fusion(parts.mix_tensor(regions, mix), states, mask)

    def forward(self, regions: torch.Tensor, question: dict, mix: parts.Mix = None,
                closed: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.classifier(self.joint(regions, question, mix))
        if self.image_prior is not None:
            logits = logits + self.image_prior(parts.mix_tensor(regions, mix).mean(1)).to(logits.dtype)
        return logits

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, closed: torch.Tensor | None = None) -> torch.Tensor:
        """MEVF's: BCE with logits on soft scores, summed over answers, averaged over questions."""
        return F.binary_cross_entropy_with_logits(logits, targets) * targets.shape[1]


class TypeClassifier(nn.Module):
    """CR's question-type classifier: word embeddings -> GRU -> gated attention over words -> closed / open."""

    def __init__(self, vocab_size: int, emb_dim: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, emb_dim, padding_idx=0)
        self.rnn = nn.GRU(emb_dim, hidden, batch_first=True)
        self.att = nn.Linear(hidden, 1)
        self.gate = nn.Linear(hidden, 1)
        self.out = nn.Linear(hidden, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        states, _ = self.rnn(self.embed(ids))
        mask = ids != 0
        logits = self.att(states).squeeze(-1) * torch.sigmoid(self.gate(states).squeeze(-1))
        w = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1).nan_to_num(0.0)
        return self.out((w[:, :, None] * states).sum(1))  # (B, 2): [open, closed]


class CRNet(FusionNet):
    def build_heads(self, s: dict, v_dim: int, answers: Sequence[str], closed_answers) -> None:
        closed_set = set(closed_answers or ())
        idx_closed = [i for i, a in enumerate(answers) if a in closed_set]
        idx_open = [i for i, a in enumerate(answers) if a not in closed_set]
        if not idx_closed or not idx_open:
            raise ValueError("CR needs closed and open answers in the training set")
        self.register_buffer("idx_closed", torch.tensor(idx_closed), persistent=False)
        self.register_buffer("idx_open", torch.tensor(idx_open), persistent=False)
        self.closed_answers = sorted(closed_set)
        s = dict(s, fusion="ban")
        self.fusion_closed, self.fusion_open = self.make_fusion(s, v_dim), self.make_fusion(s, v_dim)
        self.gate_closed = nn.Linear(s["hidden"], s["hidden"])
        self.gate_open = nn.Linear(s["hidden"], s["hidden"])
        self.head_closed = parts.Classifier(s["hidden"], s["classifier_hidden"], len(idx_closed), s["dropout"])
        self.head_open = parts.Classifier(s["hidden"], s["classifier_hidden"], len(idx_open), s["dropout"])
        self.type_classifier = TypeClassifier(self.question_vocab_size(s), s["emb_dim"], s["type_hidden"])

    def question_vocab_size(self, s: dict) -> int:
        return self.question.embed.num_embeddings

    def predict_closed(self, question: dict) -> torch.Tensor:
        return self.type_classifier(question["ids"]).argmax(-1).bool()

    def forward(self, regions: torch.Tensor, question: dict, mix: parts.Mix = None,
                closed: torch.Tensor | None = None) -> torch.Tensor:
        if closed is None:
            closed = self.predict_closed(question)
        states, mask = self.question(question, mix)
        q_last = parts.last_state(states, mask)
        v = parts.mix_tensor(regions, mix)
        out = torch.full((regions.shape[0], self.n_answers), NEG, dtype=regions.dtype, device=regions.device)
        for flag, fusion, gate, head, idx in ((True, self.fusion_closed, self.gate_closed, self.head_closed,
                                               self.idx_closed),
                                              (False, self.fusion_open, self.gate_open, self.head_open,
                                               self.idx_open)):
            rows = (closed == flag).nonzero().flatten()
            if len(rows) == 0:
                continue
            joint = fusion(v[rows], states[rows], mask[rows]) * torch.sigmoid(gate(q_last[rows]))
            logits = head(joint).to(out.dtype)
            out[rows[:, None], idx[None, :]] = logits
        return out

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, closed: torch.Tensor | None = None) -> torch.Tensor:
        """BCE of each question's branch over that branch's answers (CR trains both branches jointly)."""
        if closed is None:
            raise ValueError("CR's loss needs each question's closed/open flag")
        total = logits.new_zeros(())
        for flag, idx in ((True, self.idx_closed), (False, self.idx_open)):
            rows = (closed == flag).nonzero().flatten()
            if len(rows):
                lg, tg = logits[rows][:, idx], targets[rows][:, idx]
                total = total + F.binary_cross_entropy_with_logits(lg, tg, reduction="sum") / logits.shape[0]
        return total

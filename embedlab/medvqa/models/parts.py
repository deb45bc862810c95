"""Building blocks of the Med-VQA model library: image encoders, question encoders, fusions and the classifier.

Image encoders (input: grey pixels in [0, 1], (B, 1, S, S); output: regions (B, R, D)):
- ``MAMLCNN``: MEVF's MAML-style CNN, 4 x [conv 3x3 stride 2, 64 ch, ReLU, BatchNorm]; on 84 px its map is 6 x 6.
  ``regions=1`` averages the map into one 64-d vector (MEVF as published); ``regions=0`` keeps every cell (36 on 84 px).
- ``CDAE``: MEVF's convolutional denoising auto-encoder on 128 px (encoder 64 -> pool -> 32 -> pool -> 16 channels,
  codes 16 x (S/4)^2 -> Linear -> 64-d; a decoder back to a sigmoid image for the reconstruction loss).
Question encoders (input: a dict of prepared tensors, output: states (B, T, H) and a mask):
- ``WordRNN``: word embeddings (random init: GloVe is not available offline) + 1-layer LSTM (MEVF) or GRU (CR).
- ``FrozenStates``: precomputed token states of a frozen text encoder (all-MiniLM-L6-v2) projected to H.
Fusions (regions + question states -> joint vector (B, H)):
- ``SAN``: stacked attention (MEVF's), ``BAN``: bilinear attention network (Kim et al. 2018; glimpses, rank k,
  residual per glimpse), ``CoAttention``: a small cross-attention transformer (METER/MMBERT analogue: question tokens
  attend to image patches and back).
``Classifier``: Linear -> ReLU -> dropout -> Linear (MEVF's SimpleClassifier; weight-normed linears are not used).

Every block takes an optional ``mix`` (a permutation and a weight, VQAMix) where its inputs are mixed. The blocks
know nothing about datasets or training (definitions.py assembles them, train.py trains them).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

Mix = tuple[torch.Tensor, float] | None  # (partner index per example, lambda)


def mix_tensor(x: torch.Tensor, mix: Mix) -> torch.Tensor:
    if mix is None:
        return x
    perm, lam = mix
    return lam * x + (1.0 - lam) * x[perm]


class MAMLCNN(nn.Module):
    def __init__(self, channels: int = 64, regions: int = 1, blocks: int = 4):
        super().__init__()
        layers, c_in = [], 1
        for _ in range(blocks):
            layers += [nn.Conv2d(c_in, channels, 3, stride=2, padding=1), nn.ReLU(), nn.BatchNorm2d(channels)]
            c_in = channels
        self.net = nn.Sequential(*layers)
        self.regions = regions
        self.out_dim = channels

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        fmap = self.net(pixels)  # (B, C, h, w)
        if self.regions == 1:
            return fmap.mean(dim=(2, 3))[:, None, :]
        return fmap.flatten(2).transpose(1, 2)  # (B, h*w, C)


class CDAE(nn.Module):
    def __init__(self, size: int = 128, out_dim: int = 64, noise: float = 0.1):
        super().__init__()
        if size % 4:
            raise ValueError(f"CDAE image size must be a multiple of 4, got {size}")
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 16, 3, padding=1), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(16, 32, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, 64, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.Conv2d(64, 1, 3, padding=1), nn.Sigmoid())
        self.proj = nn.Linear(16 * (size // 4) ** 2, out_dim)
        self.noise = noise
        self.out_dim = out_dim

    def codes(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encoder(pixels)

    def reconstruction_loss(self, pixels: torch.Tensor) -> torch.Tensor:
        """MSE of the decoder's output from noised input against the clean image (the denoising objective)."""
        noisy = (pixels + self.noise * torch.randn_like(pixels)).clamp(0, 1) if self.training else pixels
        return F.mse_loss(self.decoder(self.encoder(noisy)), pixels)

    def forward(self, pixels: torch.Tensor | None = None, codes: torch.Tensor | None = None) -> torch.Tensor:
        if codes is None:
            codes = self.codes(pixels)
        return self.proj(codes.flatten(1))[:, None, :]  # (B, 1, out_dim)


class WordRNN(nn.Module):
    def __init__(self, vocab_size: int, emb_dim: int = 300, hidden: int = 1024, rnn: str = "lstm",
                 dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, emb_dim, padding_idx=0)
        cls = {"lstm": nn.LSTM, "gru": nn.GRU}[rnn]
        self.rnn = cls(emb_dim, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.out_dim = hidden

    def forward(self, q: dict[str, torch.Tensor], mix: Mix = None) -> tuple[torch.Tensor, torch.Tensor]:
        ids = q["ids"]
        emb = mix_tensor(self.drop(self.embed(ids)), mix)
        states, _ = self.rnn(emb)
        mask = ids != 0
        if mix is not None:
            mask = mask | mask[mix[0]]
        return states, mask


class FrozenStates(nn.Module):
    """Token states of a frozen encoder, computed once per question outside the model (models/textstates.py)."""

    def __init__(self, in_dim: int, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout))
        self.out_dim = hidden

    def forward(self, q: dict[str, torch.Tensor], mix: Mix = None) -> tuple[torch.Tensor, torch.Tensor]:
        mask = q["mask"].bool()
        states = self.proj(mix_tensor(q["states"], mix))
        if mix is not None:
            mask = mask | mask[mix[0]]
        return states, mask


def last_state(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The state at each question's last real token (the RNN's summary)."""
    idx = (mask.long().sum(1) - 1).clamp(min=0)
    return states[torch.arange(states.shape[0]), idx]


class SAN(nn.Module):
    """Stacked attention (Yang et al. 2016, MEVF's variant): the question vector queries the regions ``stacks``
    times."""

    def __init__(self, v_dim: int, q_dim: int, hidden: int, stacks: int = 2, dropout: float = 0.5):
        super().__init__()
        self.v_proj = nn.Linear(v_dim, q_dim)
        self.att_v = nn.ModuleList(nn.Linear(q_dim, hidden) for _ in range(stacks))
        self.att_q = nn.ModuleList(nn.Linear(q_dim, hidden) for _ in range(stacks))
        self.att_p = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(stacks))
        self.drop = nn.Dropout(dropout)
        self.out_dim = q_dim

    def forward(self, v: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        u = last_state(states, mask)
        vp = self.v_proj(v)  # (B, R, q_dim)
        for wv, wq, wp in zip(self.att_v, self.att_q, self.att_p):
            h = self.drop(torch.tanh(wv(vp) + wq(u)[:, None, :]))
            p = torch.softmax(wp(h).squeeze(-1), dim=1)
            u = u + (p[:, :, None] * vp).sum(1)
        return u


class FCNet(nn.Module):
    def __init__(self, d_in: int, d_out: int, dropout: float = 0.0, act: bool = True):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_in, d_out), *([nn.ReLU()] if act else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BCNet(nn.Module):
    """Low-rank bilinear map between regions and words: attention logits and attended joint features."""

    def __init__(self, v_dim: int, q_dim: int, h_dim: int, glimpses: int, k: int = 3, dropout: float = 0.2):
        super().__init__()
        self.k, self.h_dim = k, h_dim
        self.v_net = FCNet(v_dim, h_dim * k, dropout)
        self.q_net = FCNet(q_dim, h_dim * k, dropout)
        self.h_mat = nn.Parameter(torch.empty(glimpses, h_dim * k).normal_(0, 0.02))
        self.h_bias = nn.Parameter(torch.zeros(glimpses, 1, 1))

    def logits(self, v: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        v_, q_ = self.v_net(v), self.q_net(q)
        return torch.einsum("bvk,gk,bqk->bgvq", v_, self.h_mat, q_) + self.h_bias

    def joint(self, v: torch.Tensor, q: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        v_, q_ = self.v_net(v), self.q_net(q)
        fused = torch.einsum("bvk,bvq,bqk->bk", v_, att, q_)  # (B, h_dim*k)
        return fused.view(-1, self.h_dim, self.k).sum(-1)  # sum-pool over the rank


class BAN(nn.Module):
    def __init__(self, v_dim: int, q_dim: int, glimpses: int = 2, k: int = 3, dropout: float = 0.2):
        super().__init__()
        self.glimpses = glimpses
        self.att = BCNet(v_dim, q_dim, q_dim, glimpses, k, dropout)
        self.b_nets = nn.ModuleList(BCNet(v_dim, q_dim, q_dim, 1, k, dropout) for _ in range(glimpses))
        self.q_prj = nn.ModuleList(FCNet(q_dim, q_dim, dropout=0.2) for _ in range(glimpses))
        self.out_dim = q_dim

    def forward(self, v: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.att.logits(v, states)  # (B, G, V, Q)
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        b, g, nv, nq = logits.shape
        att = torch.softmax(logits.reshape(b, g, nv * nq), dim=-1).reshape(b, g, nv, nq)
        q = states
        for i in range(self.glimpses):
            joint = self.b_nets[i].joint(v, q, att[:, i])
            q = self.q_prj[i](joint[:, None, :]) + q  # residual on every word
        return (q * mask[:, :, None]).sum(1)


class CoAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.self_q = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.q_to_v = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.v_to_q = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ff_q = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.ff_v = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(5))

    def forward(self, q: torch.Tensor, v: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.norms
        x = n[0](q)
        q = q + self.self_q(x, x, x, key_padding_mask=pad, need_weights=False)[0]
        x, y = n[1](q), n[2](v)
        q = q + self.q_to_v(x, y, y, need_weights=False)[0]
        v = v + self.v_to_q(y, x, x, key_padding_mask=pad, need_weights=False)[0]
        return q + self.ff_q(n[3](q)), v + self.ff_v(n[4](v))


class CoAttention(nn.Module):
    """Question tokens and image patches exchange information through cross-attention (METER-style co-attention)."""

    def __init__(self, v_dim: int, q_dim: int, layers: int = 2, heads: int = 4, dropout: float = 0.1,
                 max_regions: int = 256):
        super().__init__()
        self.v_proj = nn.Linear(v_dim, q_dim)
        self.v_pos = nn.Parameter(torch.zeros(1, max_regions, q_dim))
        self.layers = nn.ModuleList(CoAttentionLayer(q_dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(q_dim)
        self.out_dim = q_dim

    def forward(self, v: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        v = self.v_proj(v) + self.v_pos[:, : v.shape[1]]
        pad = ~mask
        q = states
        for layer in self.layers:
            q, v = layer(q, v, pad)
        q = self.norm(q)
        return (q * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


class Classifier(nn.Module):
    def __init__(self, d_in: int, hidden: int, n_out: int, dropout: float = 0.5):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

"""The images of a set of records, loaded once per unique image: the basis of image-centric batches.

VQA-RAD asks about 10 questions per image, so models compute their image side once per unique image in a batch and
index it per question (train.py). ``ImageBank.build(records, sizes=(84, 128))`` loads every distinct image the records
refer to, grey, resized to each size, as float tensors in [0, 1]; ``bank.index(records)`` maps records to rows.

Loading 300 images takes seconds, so banks are cached on disk under ``<cache>/medvqa/images/`` keyed by the image
paths, their sizes and modification times and the requested sizes (a changed file gives a new key). A missing or
unreadable image is a ``DataError`` naming the file and the first record that refers to it.

Image conditions for the reliance checks: ``blank()`` is a bank of the same images replaced by one constant grey (the
bank's mean pixel value, so that inputs stay in range); ``shuffled(seed)`` permutes the images among themselves with
no image left in place, so every question is asked about some other real image. It does no augmentation.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import DataError
from ..settings import cache_dir
from .datasets import image_path
from .images import load_image
from .records import VQARecord


@dataclass
class ImageBank:
    keys: list[str]  # resolved image paths, one per row
    pixels: dict[int, torch.Tensor]  # size -> (N, 1, size, size) float32 in [0, 1]
    condition: str = "real"  # real | blank | shuffled

    @classmethod
    def build(cls, records: Sequence[VQARecord], sizes: Sequence[int], *, image_dir: str | Path | None = None,
              cache: bool = True) -> ImageBank:
        first_record: dict[str, str] = {}
        for r in records:
            first_record.setdefault(str(image_path(r, image_dir)), r.qid)
        keys = sorted(first_record)
        if not keys:
            raise DataError("no images: the record list is empty")
        sizes = sorted({int(s) for s in sizes})
        cached = _cache_file(keys, sizes) if cache else None
        if cached is not None and cached.is_file():
            try:
                data = torch.load(cached, weights_only=True)
                return cls(keys, {int(k): v for k, v in data.items()})
            except Exception:  # noqa: BLE001 - a damaged cache entry is rebuilt, never trusted
                pass
        pixels = {s: torch.empty(len(keys), 1, s, s) for s in sizes}
        for i, key in enumerate(keys):
            for s in sizes:
                try:
                    pixels[s][i] = torch.from_numpy(load_image(key, s, grey=True))
                except DataError as e:
                    raise DataError(f"{e} (image of record {first_record[key]})") from None
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cached) as tmp:
                torch.save({str(k): v for k, v in pixels.items()}, tmp)
        return cls(keys, pixels)

    def __len__(self) -> int:
        return len(self.keys)

    def index(self, records: Sequence[VQARecord], image_dir: str | Path | None = None) -> torch.Tensor:
        """Row of each record's image (long tensor); a record whose image is not in the bank is a DataError."""
        where = {k: i for i, k in enumerate(self.keys)}
        out = []
        for r in records:
            key = str(image_path(r, image_dir))
            if key not in where:
                raise DataError(f"record {r.qid}: its image {key} is not in this image bank")
            out.append(where[key])
        return torch.tensor(out, dtype=torch.long)

    def to(self, device) -> ImageBank:
        return ImageBank(self.keys, {s: p.to(device) for s, p in self.pixels.items()}, self.condition)

    def blank(self) -> ImageBank:
        grey = {s: torch.full_like(p, float(p.mean())) for s, p in self.pixels.items()}
        return ImageBank(self.keys, grey, "blank")

    def shuffled(self, seed: int = 0) -> ImageBank:
        n = len(self.keys)
        if n < 2:
            raise DataError("cannot shuffle images among fewer than two")
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=g)
        fixed = perm == torch.arange(n)
        while fixed.any():  # move fixed points: rotate them among themselves (or swap with a neighbour)
            idx = fixed.nonzero().flatten()
            if len(idx) == 1:
                j = int(idx[0])
                k = (j + 1) % n
                perm[j], perm[k] = perm[k].clone(), perm[j].clone()
            else:
                perm[idx] = perm[idx.roll(1)]
            fixed = perm == torch.arange(n)
        return ImageBank(self.keys, {s: p[perm] for s, p in self.pixels.items()}, "shuffled")


def _cache_file(keys: Sequence[str], sizes: Sequence[int]) -> Path:
    h = hashlib.sha256()
    for key in keys:
        try:
            st = os.stat(key)
            h.update(f"{key}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{key}\0missing\n".encode())
    h.update(json.dumps(list(sizes)).encode())
    return cache_dir() / "medvqa" / "images" / f"{h.hexdigest()[:24]}.pt"

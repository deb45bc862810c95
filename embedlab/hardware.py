"""Whether this machine computes bf16 natively, to choose a default precision that is fast here, not everywhere.

    native_bf16()                  # True on a CPU with AVX-512 BF16 or AMX, or a CUDA device that supports bf16
    auto_precision()               # ("bf16", why) or ("fp32", why): what a default of "auto" resolves to

bf16 autocast is about 4x faster than fp32 for matmuls on a CPU with AVX-512 BF16 (the machines most of embedlab's
numbers were measured on), but where the CPU lacks those instructions PyTorch emulates bf16 and it is far slower: on
an AMD EPYC with AVX2 only, measured 0.9 GFLOP/s for a bf16 matmul against 51 GFLOP/s in fp32 (one thread), and 7x
slower for an autocast Linear layer. So a default of bf16 is only right where it is native.

``EMBEDLAB_NATIVE_BF16=1`` / ``=0`` overrides the detection (a CPU whose flags are hidden by a hypervisor; tests).
It does not decide anything by itself: callers (the demo, trainers' warnings) ask it. Linux reads /proc/cpuinfo;
elsewhere a CPU counts as without native bf16 unless the environment says otherwise.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo text (read from the file when not given); empty where unknown."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / ARM
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=None)
def _cpu_native_bf16() -> bool:
    return bool(set(BF16_CPU_FLAGS) & cpu_flags())


def native_bf16(device: str = "cpu") -> bool:
    """True when bf16 arithmetic is native on ``device`` ("cpu" or "cuda"); see the module docstring."""
    forced = os.environ.get("EMBEDLAB_NATIVE_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if device.startswith("cuda"):
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return _cpu_native_bf16()


def auto_precision(device: str = "cpu") -> tuple[str, str]:
    """("bf16" | "fp32", a short reason to log), for a setting of "auto"."""
    if native_bf16(device):
        return "bf16", "this machine computes bf16 natively"
    if device.startswith("cuda"):
        return "fp32", "this GPU has no native bf16"
    return "fp32", ("this CPU has no native bf16 (no AVX-512 BF16 or AMX): emulated bf16 would be several times "
                    "slower than fp32")

"""embedlab.hardware: native bf16 is read from the CPU's flags (or the environment), and "auto" follows it."""
from __future__ import annotations

from embedlab import hardware

EPYC_AVX2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse sse2 avx avx2 fma f16c\n\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"


def test_flags_are_read_from_cpuinfo_text():
    assert {"avx2", "fma"} <= hardware.cpu_flags(EPYC_AVX2)
    assert "avx512_bf16" not in hardware.cpu_flags(EPYC_AVX2)
    assert "amx_bf16" in hardware.cpu_flags(SAPPHIRE)
    assert hardware.cpu_flags("no flags here") == frozenset()


def test_native_bf16_follows_the_flags_and_the_environment_overrides(monkeypatch):
    """An AVX2-only CPU gets fp32 from "auto", an AVX-512 BF16 one bf16; EMBEDLAB_NATIVE_BF16 overrides both."""
    monkeypatch.delenv("EMBEDLAB_NATIVE_BF16", raising=False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda cpuinfo=None: frozenset({"avx2", "fma"}))
    hardware._cpu_native_bf16.cache_clear()
    assert hardware.native_bf16() is False
    precision, why = hardware.auto_precision()
    assert precision == "fp32" and "no native bf16" in why
    monkeypatch.setattr(hardware, "cpu_flags", lambda cpuinfo=None: frozenset({"avx512_bf16"}))
    hardware._cpu_native_bf16.cache_clear()
    assert hardware.native_bf16() is True and hardware.auto_precision()[0] == "bf16"
    monkeypatch.setenv("EMBEDLAB_NATIVE_BF16", "0")
    assert hardware.auto_precision()[0] == "fp32"
    monkeypatch.setenv("EMBEDLAB_NATIVE_BF16", "1")
    monkeypatch.setattr(hardware, "cpu_flags", lambda cpuinfo=None: frozenset())
    hardware._cpu_native_bf16.cache_clear()
    assert hardware.native_bf16() is True
    hardware._cpu_native_bf16.cache_clear()

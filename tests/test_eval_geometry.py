"""Geometry metrics: known values on constructed spaces, and agreement with brute force."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from embedlab.evaluate import geometry as g


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -------------------------------------------------------------------------------------------------- pairs


def test_sample_pairs_all_when_few_and_seeded_when_many():
    i, j = g.sample_pairs(5)
    assert sorted(zip(i.tolist(), j.tolist())) == list(itertools.combinations(range(5), 2))
    i1, j1 = g.sample_pairs(1000, max_pairs=10_000, seed=0)
    i2, j2 = g.sample_pairs(1000, max_pairs=10_000, seed=0)
    i3, _ = g.sample_pairs(1000, max_pairs=10_000, seed=1)
    assert len(i1) == 10_000 and (i1 != j1).all()
    assert (i1 == i2).all() and (j1 == j2).all() and not (i1 == i3).all()
    assert i1.min() >= 0 and max(i1.max(), j1.max()) < 1000
    with pytest.raises(ValueError):
        g.sample_pairs(1)


# -------------------------------------------------------------------------------------------------- sentence level


def test_alignment_known_values():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 8))
    assert g.alignment(x, x) == 0.0
    assert g.alignment(x, 3.0 * x) == pytest.approx(0.0, abs=1e-24)  # scale-free: inputs are normalised
    assert g.alignment(x, -x) == pytest.approx(4.0)  # antipodal unit vectors are 2 apart
    e = np.eye(4)
    assert g.alignment(e, np.roll(e, 1, axis=0)) == pytest.approx(2.0)  # orthogonal: squared distance 2


def test_uniformity_of_orthonormal_basis_and_collapse():
    # All pairs of an orthonormal basis are sqrt(2) apart: log mean exp(-2 * 2) = -4.
    assert g.uniformity(np.eye(16)) == pytest.approx(-4.0)
    assert g.anisotropy(np.eye(16)) == pytest.approx(0.0)
    ones = np.ones((10, 4))
    assert g.uniformity(ones) == pytest.approx(0.0)  # collapsed: the worst possible value
    assert g.anisotropy(ones) == pytest.approx(1.0)
    assert g.align_uniform_ratio(0.5, 0.0) == math.inf


def test_uniformity_equals_simcse_pdist_formula():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 16)) + 0.7  # anisotropic on purpose
    ref = torch.pdist(torch.nn.functional.normalize(torch.from_numpy(x), dim=1), p=2).pow(2).mul(-2).exp().mean().log()
    assert g.uniformity(x) == pytest.approx(float(ref), abs=1e-12)
    assert g.uniformity(torch.from_numpy(x)) == g.uniformity(x)


def test_sampled_uniformity_close_to_exact():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(800, 8)) + 0.3
    exact = g.uniformity(x, max_pairs=10**9)
    sampled = g.uniformity(x, max_pairs=20_000)
    assert sampled != exact and sampled == pytest.approx(exact, abs=0.02)
    assert g.uniformity(x, max_pairs=20_000) == sampled  # reproducible


def test_anisotropy_and_distance_ratio_equal_brute_force():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 6)) + 0.5
    x_pos = x + rng.normal(scale=0.3, size=x.shape)
    f = _unit(x)
    pairs = list(itertools.combinations(range(len(x)), 2))
    cos = np.mean([f[a] @ f[b] for a, b in pairs])
    rand = np.mean([np.linalg.norm(f[a] - f[b]) for a, b in pairs])
    pos = np.mean(np.linalg.norm(f - _unit(x_pos), axis=1))
    assert g.anisotropy(x) == pytest.approx(cos, abs=1e-12)
    assert g.distance_ratio(x, x_pos, x) == pytest.approx(pos / rand, abs=1e-12)

    report = g.sentence_geometry(x, x_pos, x)
    assert set(report) == {"alignment", "uniformity", "distance_ratio", "align_uniform_ratio", "anisotropy"}
    assert report["align_uniform_ratio"] == pytest.approx(report["alignment"] / abs(report["uniformity"]))
    assert 0 < report["distance_ratio"] < 1  # positives closer than random pairs


# -------------------------------------------------------------------------------------------------- token level


def test_token_cosine_equals_brute_force_and_skips_single_tokens():
    rng = np.random.default_rng(4)
    reps = [rng.normal(size=(n, 5)) + 0.4 for n in (2, 4, 7)]
    expected = np.mean([
        np.mean([_unit(r)[a] @ _unit(r)[b] for a in range(len(r)) for b in range(len(r)) if a != b]) for r in reps
    ])
    assert g.token_cosine(reps) == pytest.approx(expected, abs=1e-12)
    assert g.token_cosine(reps + [rng.normal(size=(1, 5))]) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(g.token_cosine([np.ones((1, 5))]))
    assert g.token_cosine([np.ones((6, 3))]) == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["svd", "gram"])
def test_spectrum_known_values(method):
    d = 8
    identity = g.token_spectrum([np.eye(d)[:3], np.eye(d)[3:]], center=False, method=method)
    assert identity["effective_rank"] == pytest.approx(d)
    assert identity["svd_entropy"] == pytest.approx(math.log(d))
    assert identity["condition_number"] == pytest.approx(1.0)

    # Centring the identity removes one direction: d - 1 equal singular values and one zero. The condition number
    # is taken on the uncentred matrix (the identity: 1).
    centred = g.token_spectrum([np.eye(d)], center=True, method=method)
    assert centred["effective_rank"] == pytest.approx(d - 1, rel=1e-6)
    assert centred["condition_number"] == pytest.approx(1.0)

    rng = np.random.default_rng(5)
    rank1 = np.outer(rng.normal(size=20), rng.normal(size=d))
    one = g.token_spectrum([rank1[:12], rank1[12:]], center=False, method=method)
    assert one["effective_rank"] == pytest.approx(1.0, abs=1e-6)
    assert one["svd_entropy"] == pytest.approx(0.0, abs=1e-6)
    # Rank 1: the non-degenerate spectrum is one singular value, so its condition number is 1.
    assert one["numerical_rank"] == 1 and one["condition_number"] == pytest.approx(1.0)


def test_svd_and_gram_paths_agree_and_equal_numpy():
    rng = np.random.default_rng(6)
    reps = [rng.normal(size=(n, 10)) * np.linspace(0.2, 3, 10) + 1.0 for n in (5, 9, 3, 11)]
    stacked = np.concatenate(reps)
    ref = np.linalg.svd(stacked - stacked.mean(axis=0), compute_uv=False)
    assert np.allclose(g.singular_values(reps, method="svd"), ref, atol=1e-10)
    assert np.allclose(g.singular_values(reps, method="gram"), ref, atol=1e-8)
    p = ref / ref.sum()
    raw = np.linalg.svd(stacked, compute_uv=False)
    expected = {"effective_rank": math.exp(-(p * np.log(p)).sum()), "svd_entropy": -(p * np.log(p)).sum(),
                "condition_number": raw[0] / raw[-1]}
    for method in ("svd", "gram"):
        got = g.token_spectrum(reps, method=method)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-6)
    full = g.token_geometry(reps)
    assert set(full) == {"token_cosine", "effective_rank", "svd_entropy", "condition_number", "numerical_rank"}


def test_spectrum_rejects_bad_input():
    with pytest.raises(ValueError):
        g.token_spectrum([])
    with pytest.raises(ValueError):
        g.token_spectrum([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError):
        g.singular_values([np.zeros((2, 3))], method="qr")


def test_layernorm_outputs_keep_a_finite_condition_number():
    """LayerNorm outputs lie on one affine hyperplane: centred they have rank dim - 1 (condition number inf), so the
    condition number is computed uncentred and stays finite."""
    import torch

    torch.manual_seed(0)
    ln = torch.nn.LayerNorm(16)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.normal_()
        reps = [ln(torch.randn(30, 16)).numpy() for _ in range(4)]
    s_centred = g.singular_values(reps, center=True)
    assert s_centred[-1] < 1e-6 * s_centred[0]  # rank dim - 1 after centring (float32 inputs)
    metrics = g.token_spectrum(reps)
    assert math.isfinite(metrics["condition_number"]) and metrics["condition_number"] > 1

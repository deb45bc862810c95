"""embedlab's merges against mergekit itself (PyPI `mergekit`, the dev extra), on tiny random BERT checkpoints.

Every method both tools have (linear, task_arithmetic, ties, dare_linear, dare_ties, slerp) is run by mergekit
(`MergeConfiguration` + `run_merge`) and by embedlab (`load_fusion_config` on the very same YAML, then `fuse`), and
every tensor is compared to 1e-6, defaults included. DARE draws its masks from different generators in the two tools,
so it is compared at density 1 to 1e-6 and, below 1, statistically: the kept fraction and the rescale rule.
"""
from __future__ import annotations

import copy

import pytest
import torch
import yaml
from safetensors.torch import load_file

pytest.importorskip("mergekit")
pytestmark = pytest.mark.filterwarnings("ignore:numpy.core is deprecated:DeprecationWarning")  # mergekit's import

from conftest import make_tiny_bert  # noqa: E402

from embedlab.errors import ConfigError  # noqa: E402
from embedlab.fusion import MERGE_METHODS, fuse  # noqa: E402
from embedlab.fusion.config import load_fusion_config  # noqa: E402
from embedlab.text import Embedder  # noqa: E402

ATOL = 1e-6
SHARED = ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp")
TIE = "embeddings.LayerNorm.bias"  # zero in the base: a = +d, b = -d exactly, c = base (sign-election ties)
ZERO_C = "pooler.dense.bias"  # c leaves it at the base value (a zero delta)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """base (the random init) and three 'fine-tuned' checkpoints a, b, c (base + seeded noise), as plain HF folders
    (model.safetensors + config.json at the root: the embedlab save is one), which mergekit reads as they are."""
    root = tmp_path_factory.mktemp("mergekit")
    backbone, tok = make_tiny_bert()
    Embedder(backbone, tok, max_length=32, name="tiny").save(root / "base")
    d = 0.02 * torch.randn(backbone.config.hidden_size, generator=torch.Generator().manual_seed(99))
    paths = {"base": str(root / "base")}
    for i, name in enumerate("abc"):
        model = copy.deepcopy(backbone)
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for key, p in model.named_parameters():
                if key == TIE:
                    p.copy_({"a": d, "b": -d, "c": torch.zeros_like(d)}[name])
                elif not (name == "c" and key == ZERO_C):
                    p.add_(0.02 * torch.randn(p.shape, generator=g))
        Embedder(model, tok, max_length=32, name="tiny").save(root / name)
        paths[name] = str(root / name)
    assert load_file(root / "base" / "model.safetensors")[TIE].abs().max() == 0  # the tie is exact
    return paths


@pytest.fixture
def mergekit_runner(monkeypatch):
    """Run mergekit on a config dict, return the merged state dict."""
    import mergekit.plan
    from mergekit.config import MergeConfiguration
    from mergekit.io.tasks import LoaderCache
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    # mergekit 0.1.5 bug: the check for an optional weight (BERT's embeddings.position_ids) concatenates a list and
    # the weight's alias tuple and raises TypeError. Skip such a weight when no input has it, which is what that
    # check decides, and leave every other weight to mergekit as it is.
    original = mergekit.plan.MergePlanner.plan_tensor

    def plan_tensor(self, weight, weights_in, models, cfg_reader):
        if weight.optional and not any(n in LoaderCache().get(m).index.tensor_paths
                                       for m, w in zip(models, weights_in) for n in (w.name, *(w.aliases or ()))):
            return None
        return original(self, weight, weights_in, models, cfg_reader)

    monkeypatch.setattr(mergekit.plan.MergePlanner, "plan_tensor", plan_tensor)

    def run(config: dict, out, seed: int | None = None) -> dict[str, torch.Tensor]:
        run_merge(MergeConfiguration.model_validate(config), str(out),
                  MergeOptions(cuda=False, copy_tokenizer=False, quiet=True, write_model_card=False,
                               random_seed=seed))
        return load_file(str(out / "model.safetensors"))

    return run


def both(tmp_path, runner, config: dict, seed: int | None = None):
    """(mergekit's state, embedlab's state, embedlab's fuse kwargs) for one YAML config, read by both tools."""
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump(config))
    theirs = runner(yaml.safe_load(path.read_text()), tmp_path / "mergekit", seed=seed)
    kw = load_fusion_config(path)
    res = fuse(kw["models"], kw["method"], out=tmp_path / "embedlab", base=kw["base"], weights=kw["weights"],
               params=kw["params"], seed=kw["seed"] if seed is None else seed, show_progress=False)
    ours = load_file(str(res.out / "model.safetensors"))
    return theirs, ours, kw


def max_diff(theirs, ours) -> float:
    assert theirs.keys() == ours.keys()
    assert all(theirs[k].dtype == ours[k].dtype for k in theirs)
    return max((theirs[k].double() - ours[k].double()).abs().max().item() for k in theirs)


def assert_same(tmp_path, runner, config, label):
    theirs, ours, _ = both(tmp_path, runner, config)
    worst = max_diff(theirs, ours)
    print(f"\n[mergekit vs embedlab] {label}: max |Δ| = {worst:.3g}")
    assert worst <= ATOL, (label, worst)
    return theirs, ours


def _models(ckpts, names="abc", **per_model):
    """models: [...] entries; per_model maps a parameter to one value per model (None: not given)."""
    out = []
    for i, name in enumerate(names):
        params = {k: v[i] for k, v in per_model.items() if v[i] is not None}
        out.append({"model": ckpts[name], **({"parameters": params} if params else {})})
    return out


# ------------------------------------------------------------------------------------------ exact, every method
@pytest.mark.parametrize("normalize", [None, False])
def test_linear_matches_mergekit(ckpts, tmp_path, mergekit_runner, normalize):
    cfg = {"merge_method": "linear", "dtype": "float32", "models": _models(ckpts, weight=[0.5, 0.3, 0.4])}
    if normalize is not None:
        cfg["parameters"] = {"normalize": normalize}
    assert_same(tmp_path, mergekit_runner, cfg, f"linear normalize={normalize}")


def test_linear_with_a_base_model_averages_it_too(ckpts, tmp_path, mergekit_runner):
    """mergekit adds base_model to the inputs when it is not listed, and linear averages every input; a global
    `weight` is every model's default."""
    cfg = {"merge_method": "linear", "base_model": ckpts["base"], "dtype": "float32",
           "models": _models(ckpts, "ab", weight=[0.5, None]), "parameters": {"weight": 0.25}}
    assert_same(tmp_path, mergekit_runner, cfg, "linear with base_model")


@pytest.mark.parametrize("params", [{}, {"normalize": True, "lambda": 0.7}, {"lambda": 1.5, "int8_mask": True}],
                         ids=["defaults", "normalize", "lambda-int8"])
def test_task_arithmetic_matches_mergekit(ckpts, tmp_path, mergekit_runner, params):
    cfg = {"merge_method": "task_arithmetic", "base_model": ckpts["base"], "dtype": "float32",
           "models": _models(ckpts, weight=[0.6, 0.3, 0.5]), **({"parameters": params} if params else {})}
    assert_same(tmp_path, mergekit_runner, cfg, f"task_arithmetic {params}")


@pytest.mark.parametrize("case", ["defaults", "density", "negative-weights", "rescale", "no-normalize", "base-listed"])
def test_ties_matches_mergekit(ckpts, tmp_path, mergekit_runner, case):
    """Defaults (density 1, normalize), per-model densities (⌊density·n⌋ kept), the elected sign at an exact tie
    (mergekit: +), negative weights (the sign of w·Δ votes), L1 rescale, and the base listed among the models."""
    weights = [0.4, 0.4, 0.2]  # a and b tie exactly on TIE
    params, density = {}, [None, None, None]
    if case == "density":
        params, density = {"density": 0.3, "lambda": 1.3}, [None, 0.5, 0.7]
    elif case == "negative-weights":
        weights, params = [0.6, -0.3, 0.5], {"density": 0.6}
    elif case == "rescale":
        params = {"density": 0.4, "rescale": True}
    elif case == "no-normalize":
        params = {"density": 0.5, "normalize": False}
    models = _models(ckpts, weight=weights, density=density)
    if case == "base-listed":
        models = [{"model": ckpts["base"]}] + models
    cfg = {"merge_method": "ties", "base_model": ckpts["base"], "dtype": "float32", "models": models,
           **({"parameters": params} if params else {})}
    theirs, ours = assert_same(tmp_path, mergekit_runner, cfg, f"ties {case}")
    if case == "defaults":  # a and b tie exactly (Σ = 0) on TIE: + is elected, so the positive one of ±d, not θ0 = 0
        d = load_file(ckpts["a"] + "/model.safetensors")[TIE]
        assert torch.allclose(ours[TIE], d.abs(), rtol=1e-6, atol=0) and d.abs().min() > 0


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
@pytest.mark.parametrize("params", [{}, {"density": 1.0}, {"normalize": True, "lambda": 0.8}, {"rescale": False}],
                         ids=["defaults", "explicit-density", "normalize", "no-rescale"])
def test_dare_at_density_one_matches_mergekit(ckpts, tmp_path, mergekit_runner, method, params):
    """At density 1 nothing is dropped, so DARE is exact; the defaults (density 1 for the model that gives none;
    normalize false: dare_ties does not divide by the agreeing weights) are mergekit's. "explicit-density" gives
    every density, so only normalize is left to the default."""
    cfg = {"merge_method": method, "base_model": ckpts["base"], "dtype": "float32",
           "models": _models(ckpts, weight=[0.5, 0.4, 0.3], density=[1.0, None, 1.0]),
           **({"parameters": params} if params else {})}
    assert_same(tmp_path, mergekit_runner, cfg, f"{method} density 1 {params}")


@pytest.mark.parametrize("t", [0.3, 0.8])
def test_slerp_matches_mergekit(ckpts, tmp_path, mergekit_runner, t):
    """mergekit's slerp runs from base_model (t = 0) to the other model (t = 1), whatever order `models` lists them
    in; tensors that are zero in the base (biases at init) take mergekit's arithmetic too."""
    cfg = {"merge_method": "slerp", "base_model": ckpts["base"], "dtype": "float32",
           "models": [{"model": ckpts["a"]}, {"model": ckpts["base"]}], "parameters": {"t": t}}
    assert_same(tmp_path, mergekit_runner, cfg, f"slerp t={t}")


def test_cli_params_are_mergekits_keys(ckpts, tmp_path, mergekit_runner):
    """The same keys on the command line (`--param normalize=true ...`) give mergekit's merge; a misspelt one is an
    error naming the valid keys."""
    from typer.testing import CliRunner

    from embedlab.cli import app

    params = {"normalize": True, "rescale": False, "lambda": 0.9, "int8_mask": True, "density": 1.0}
    cfg = {"merge_method": "dare_ties", "base_model": ckpts["base"], "dtype": "float32",
           "models": _models(ckpts, "ab", weight=[0.7, 0.3]), "parameters": params}
    theirs = mergekit_runner(cfg, tmp_path / "mergekit")
    flags = [x for k, v in params.items() for x in ("--param", f"{k}={str(v).lower()}")]
    res = CliRunner().invoke(app, ["fuse", "--base", ckpts["base"], "--method", "dare_ties", "--models", ckpts["a"],
                                   ckpts["b"], "--weights", "0.7", "0.3", *flags, "--out", str(tmp_path / "cli"),
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    worst = max_diff(theirs, load_file(str(tmp_path / "cli" / "model.safetensors")))
    print(f"\n[mergekit vs embedlab] dare_ties from CLI --param {params}: max |Δ| = {worst:.3g}")
    assert worst <= ATOL
    res = CliRunner().invoke(app, ["fuse", "--base", ckpts["base"], "--method", "dare_ties", "--models", ckpts["a"],
                                   "--param", "normalise=true", "--out", str(tmp_path / "x"), "--no-progress"])
    assert isinstance(res.exception, ConfigError) and "no parameter 'normalise'" in str(res.exception)
    assert "normalize" in str(res.exception) and "rescale" in str(res.exception)


# ------------------------------------------------------------------------------------------ DARE below density 1
@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_drop_fraction_and_rescale_match_mergekit(ckpts, tmp_path, mergekit_runner, method):
    """One model (weight 0.5), density 0.3: the merged delta is 0.5 · m ⊙ Δ · s. Both tools keep ≈ 30 % of the
    entries, and both rescale by s = ‖Δ‖₁ / ‖m ⊙ Δ‖₁ of their own mask (mergekit's `rescale: true`), which for the
    large tensors is ≈ 1/0.3 and the same in both to 2 %."""
    density, weight = 0.3, 0.5
    cfg = {"merge_method": method, "base_model": ckpts["base"], "dtype": "float32",
           "models": [{"model": ckpts["a"], "parameters": {"weight": weight, "density": density}}]}
    theirs, ours, _ = both(tmp_path, mergekit_runner, cfg, seed=0)
    base, a = load_file(ckpts["base"] + "/model.safetensors"), load_file(ckpts["a"] + "/model.safetensors")
    kept, total, factors = {"mergekit": 0, "embedlab": 0}, 0, {"mergekit": {}, "embedlab": {}}
    for key in base:
        if not base[key].is_floating_point():
            continue
        delta = (a[key].double() - base[key].double())
        nonzero = delta != 0
        total += int(nonzero.sum())
        for tool, state in (("mergekit", theirs), ("embedlab", ours)):
            merged = (state[key].double() - base[key].double()) / weight
            mask = (merged != 0) & nonzero
            kept[tool] += int(mask.sum())
            if mask.sum() == 0:
                continue
            expected = delta.abs().sum() / delta[mask].abs().sum()  # L1 rescale of this mask
            assert (merged[mask] - expected * delta[mask]).abs().max() < 1e-6, (tool, key)
            factors[tool][key] = float(expected)
    fractions = {tool: kept[tool] / total for tool in kept}
    print(f"\n[mergekit vs embedlab] {method} density {density}: kept {fractions}")
    assert all(abs(f - density) < 0.01 for f in fractions.values()), fractions
    big = [k for k in base if base[k].numel() >= 10_000]
    for key in big:
        assert abs(factors["mergekit"][key] / factors["embedlab"][key] - 1) < 0.02, key
        assert abs(factors["embedlab"][key] * density - 1) < 0.05, key


# ------------------------------------------------------------------------------------------ keys and defaults
@pytest.mark.parametrize("method", SHARED)
def test_parameters_and_defaults_are_mergekits(method):
    """Every parameter mergekit's method takes is accepted, with mergekit's default (`weight` is the model weights;
    slerp's `t` is required by mergekit, embedlab defaults it to 0.5)."""
    from mergekit.merge_methods.base import MISSING
    from mergekit.merge_methods.registry import get

    spec = MERGE_METHODS.get(method)
    for p in get(method).spec.parameters:
        if p.name == "weight":
            continue
        assert p.name in spec.params, (method, p.name)
        if p.default is not MISSING:
            assert spec.params[p.name] == p.default, (method, p.name, spec.params[p.name], p.default)
        if p.scope.value == "non_base":
            assert p.name in spec.per_model_params, (method, p.name)


def test_unknown_keys_and_mergekit_only_syntax_are_clear_errors(ckpts, tmp_path):
    with pytest.raises(ConfigError, match=r"no parameter 'normalise'.*normalize"):
        MERGE_METHODS.get("dare_ties").resolve_params({"normalise": True}, 2)
    spec = MERGE_METHODS.get("dare_ties")
    with pytest.raises(ConfigError, match="rescale must be true.*inverse_density"):
        spec.fn(torch.zeros(4), [torch.ones(4)], torch.ones(1), spec.resolve_params({"rescale": "l2"}, 1), 0)
    with pytest.raises(ConfigError, match="normalize must be true or false"):
        spec.fn(torch.zeros(4), [torch.ones(4)], torch.ones(1), spec.resolve_params({"normalize": "yes"}, 1), 0)
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump({"merge_method": "ties", "base_model": ckpts["base"],
                                    "models": [{"model": ckpts["a"]}], "parameters": {"densty": 0.5}}))
    with pytest.raises(ConfigError, match="densty"):
        fuse(**{k: v for k, v in load_fusion_config(path).items()}, out=tmp_path / "x", show_progress=False)
    path.write_text(yaml.safe_dump({"merge_method": "slerp", "base_model": ckpts["base"],
                                    "models": [{"model": ckpts["a"]}], "parameters": {"t": [0.0, 0.5, 1.0]}}))
    with pytest.raises(ConfigError, match="gradient"):
        load_fusion_config(path)
    path.write_text(yaml.safe_dump({"merge_method": "ties", "base_model": ckpts["base"], "models": [
        {"model": ckpts["a"], "parameters": {"density": [{"filter": "attention", "value": 0.5}, {"value": 0.2}]}}]}))
    with pytest.raises(ConfigError, match="filter"):
        load_fusion_config(path)

"""Fusion: every merge method against hand-computed results on tiny tensors, the driver's guarantees (copies of one
model, weight 1 on one model, streaming = in memory, integer buffers copied, clean failures), mergekit configs, the
greedy soup's keep/drop rule, and outputs that sentence-transformers loads."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from embedlab.errors import ConfigError
from embedlab.fusion import MERGE_METHODS, fuse
from embedlab.fusion.config import load_fusion_config
from embedlab.fusion.greedy import greedy_soup
from embedlab.text import Embedder

from tiny_training import save_noisy_checkpoints

T = torch.tensor


def run(method, base, tensors, weights=None, **params):
    spec = MERGE_METHODS.get(method)
    k = len(tensors)
    w = torch.tensor(weights if weights is not None else [1.0 / k] * k)
    return spec.fn(base, tensors, w, spec.resolve_params(params, k), 0)


# ------------------------------------------------------------------------------------------ methods, by hand
def test_linear_and_task_arithmetic_by_hand():
    a, b = T([1.0, 2.0]), T([5.0, -2.0])
    assert torch.allclose(run("linear", None, [a, b], [1.0, 3.0]), T([4.0, -1.0]))  # (a + 3b) / 4
    assert torch.allclose(run("linear", None, [a, b], [1.0, 3.0], normalize=False), T([16.0, -4.0]))
    base = T([1.0, 1.0])
    # θ0 + λ Σ w Δ = [1,1] + 2 * (0.5*[0,1] + 0.5*[4,-3]) = [5, -1]
    assert torch.allclose(run("task_arithmetic", base, [a, b], **{"lambda": 2.0}), T([5.0, -1.0]))


def test_ties_trim_elect_and_disjoint_mean_by_hand():
    base = torch.zeros(4)
    d1, d2 = T([3.0, -1.0, 0.5, 2.0]), T([-2.0, -1.0, 0.1, -2.0])
    # density 1: Σ = [1, -2, 0.6, 0] -> signs [+, -, +, + (a tie elects +, as in mergekit)]; agreeing means:
    # [3, -1, 0.3, 2]
    assert torch.allclose(run("ties", base, [d1, d2], density=1.0), T([3.0, -1.0, 0.3, 2.0]))
    # density 0.5 keeps the two largest magnitudes of each: d1 -> [3,0,0,2], d2 -> [-2,0,0,-2] (tie at 2: topk picks)
    trimmed = run("ties", base, [d1, d2], density=0.5)
    # element 0: Σ = 1 -> +, only d1 agrees -> 3; element 3: Σ = 0 -> tie -> + -> d1's 2
    assert trimmed[0] == 3.0 and trimmed[1] == 0.0 and trimmed[2] == 0.0 and trimmed[3] == 2.0
    # weights move the election: weight 3 on d2 makes element 0 negative
    assert run("ties", base, [d1, d2], [0.25, 0.75], density=1.0)[0] == -2.0
    # per-model density: d1 keeps 1 entry, d2 keeps all
    per = run("ties", base, [d1, d2], density=[0.25, 1.0])
    assert torch.allclose(per, T([3.0, -1.0, 0.1, -2.0]))


def test_dare_drops_and_rescales():
    base, d = torch.zeros(10_000), torch.full((10_000,), 0.5)
    out = run("dare_linear", base, [d], [1.0], density=0.25, rescale="inverse_density")
    assert set(out.unique().tolist()) <= {0.0, 2.0}  # dropped, or kept and rescaled by 1/0.25
    assert abs(out.mean().item() - 0.5) < 0.05  # unbiased
    out = run("dare_linear", base, [d], [1.0], density=0.25)  # mergekit's rescale: the L1 norm is kept (≈ 1/0.25)
    assert len(out.unique()) == 2 and abs(out.max().item() - 2.0) < 0.1 and abs(out.mean().item() - 0.5) < 1e-5
    a, b = torch.randn(50), torch.randn(50)
    assert torch.allclose(run("dare_linear", torch.zeros(50), [a, b], density=1.0),
                          run("task_arithmetic", torch.zeros(50), [a, b]))
    assert torch.allclose(run("dare_ties", torch.zeros(50), [a, b], density=1.0, normalize=True),
                          run("ties", torch.zeros(50), [a, b], density=1.0))
    with pytest.raises(ConfigError, match="density"):
        run("dare_ties", base, [d], [1.0], density=0.0)


def test_slerp_by_hand():
    a, b = T([1.0, 0.0]), T([0.0, 1.0])
    assert torch.allclose(run("slerp", None, [a, b], t=0.5), T([math.sqrt(0.5), math.sqrt(0.5)]), atol=1e-6)
    assert torch.allclose(run("slerp", None, [a, b], t=0.0), a) and torch.allclose(run("slerp", None, [a, b], t=1.0), b)
    c = T([2.0, 0.0])  # parallel to a: falls back to linear interpolation
    assert torch.allclose(run("slerp", None, [a, c], t=0.5), T([1.5, 0.0]))


def test_delta_guided_variants_by_hand():
    base = torch.zeros(3)
    d1, d2 = T([1.0, 0.0, 2.0]), T([3.0, 0.0, -2.0])
    # magnitude: a = |Δ_k| / Σ|Δ|: element 0 -> 1/4, 3/4 -> 2.5; element 1: all zero -> soup fallback -> 0;
    # element 2: equal magnitudes -> 0
    assert torch.allclose(run("delta_guided", base, [d1, d2], granularity="element"), T([2.5, 0.0, 0.0]))
    # inverse: a ∝ 1/|Δ|: element 0 -> 3/4, 1/4 -> 1.5
    assert torch.allclose(run("delta_guided", base, [d1, d2], variant="inverse", granularity="element")[0], T(1.5),
                          atol=1e-6)
    # softmax: T -> ∞ is the soup (2.0), T -> 0 the largest mover (3.0)
    for temperature, expected in ((1e6, 2.0), (1e-3, 3.0)):
        merged = run("delta_guided", base, [d1, d2], variant="softmax", temperature=temperature, granularity="element")
        assert abs(merged[0].item() - expected) < 1e-4
    # per tensor: mean |Δ1| = 1, mean |Δ2| = 5/3 -> a = [3/8, 5/8] for every element
    per_tensor = run("delta_guided", base, [d1, d2], granularity="tensor")
    assert torch.allclose(per_tensor, 3 / 8 * d1 + 5 / 8 * d2)
    # The default (chosen on dev data, docs/fusion.md) is magnitude per tensor.
    assert torch.equal(run("delta_guided", base, [d1, d2]), per_tensor)
    with pytest.raises(ConfigError, match="variant"):
        run("delta_guided", base, [d1, d2], variant="bogus")


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "delta_guided"])
def test_zero_deltas_and_single_model(method):
    base = torch.randn(6)
    exact = {"ties": {"density": 1.0}, "dare_linear": {"density": 1.0}, "dare_ties": {"density": 1.0}}.get(method, {})
    if MERGE_METHODS.get(method).needs_base:
        assert torch.allclose(run(method, base, [base.clone(), base.clone()], **exact), base)  # Δ = 0 -> θ0
    model = torch.randn(6)
    assert torch.allclose(run(method, base, [model], [1.0], **exact), model, atol=1e-6)  # one model -> itself


def test_unknown_parameter_and_model_count_are_config_errors():
    with pytest.raises(ConfigError, match="no parameter 'densty'.*density"):
        MERGE_METHODS.get("ties").resolve_params({"densty": 0.3}, 2)
    with pytest.raises(ConfigError, match="exactly 2"):
        MERGE_METHODS.get("slerp").check_count(3)
    with pytest.raises(ConfigError, match="3 values for 2 models"):
        MERGE_METHODS.get("ties").resolve_params({"density": [0.1, 0.2, 0.3]}, 2)


# ------------------------------------------------------------------------------------------ the driver
@pytest.fixture
def checkpoints(tmp_path, tiny_bert):
    """A base and 3 'fine-tuned' checkpoints (base + seeded noise), sentence-transformers layout."""
    return save_noisy_checkpoints(tmp_path, tiny_bert, 3)


def _weights_of(folder):
    return load_file(str(folder / "model.safetensors"))


def _assert_same_weights(a, b, atol=1e-6):
    wa, wb = _weights_of(a), _weights_of(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    assert worst <= atol, worst


EXACT_ON_COPIES = {"linear": {}, "task_arithmetic": {}, "ties": {"density": 1.0}, "dare_linear": {"density": 1.0},
                   "dare_ties": {"density": 1.0}, "delta_guided": {}, "slerp": {}}


@pytest.mark.parametrize("method", sorted(EXACT_ON_COPIES))
def test_copies_of_one_model_give_that_model(checkpoints, tmp_path, method):
    base, ckpts = checkpoints
    n = 2 if method == "slerp" else 3
    res = fuse([ckpts[0]] * n, method, out=tmp_path / "out", base=base, params=EXACT_ON_COPIES[method],
               show_progress=False)
    _assert_same_weights(res.out, ckpts[0], atol=1e-5)


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties", "delta_guided"])
def test_weight_one_on_one_model_gives_it(checkpoints, tmp_path, method):
    base, ckpts = checkpoints
    params = {"density": 1.0} if method == "ties" else {}
    res = fuse(ckpts, method, out=tmp_path / "out", base=base, weights=[0.0, 1.0, 0.0], params=params,
               show_progress=False)
    _assert_same_weights(res.out, ckpts[1], atol=1e-6)


@pytest.mark.parametrize("method", ["linear", "ties", "dare_ties", "delta_guided"])
def test_streaming_equals_in_memory(checkpoints, tmp_path, method):
    base, ckpts = checkpoints
    a = fuse(ckpts, method, out=tmp_path / "a", base=base, seed=3, show_progress=False)
    b = fuse(ckpts, method, out=tmp_path / "b", base=base, seed=3, streaming=False, show_progress=False)
    _assert_same_weights(a.out, b.out, atol=0.0)
    record = json.loads((a.out / "fusion.json").read_text())
    assert record["method"] == method and record["seed"] == 3 and len(record["models"]) == 3


def test_fused_model_loads_everywhere_and_differs_from_inputs(checkpoints, tmp_path):
    base, ckpts = checkpoints
    res = fuse(ckpts, "delta_guided", out=tmp_path / "fused", base=base, show_progress=False)
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(res.out), device="cpu").encode(["a red fox"], convert_to_tensor=True)
    ours = Embedder.load(str(res.out)).encode(["a red fox"])
    assert torch.allclose(st, torch.as_tensor(ours), atol=1e-5)
    w = _weights_of(res.out)
    assert all(not torch.equal(w[k], _weights_of(c)[k]) for c in ckpts for k in list(w)[:3])


def test_fusion_records_its_update_size_next_to_the_inputs(checkpoints, tmp_path):
    """fusion.json says how far the merge moved from the base (L2 over float tensors) and how far each input had
    moved: a uniform soup of 3 independent-noise checkpoints moves less than any of them, task arithmetic λ 3 (Σ Δ_k)
    more; computed here by hand from the files."""
    base, ckpts = checkpoints
    b = _weights_of(base)

    def dist(state):
        return sum(float((state[k].double() - b[k].double()).square().sum()) for k in b
                   if b[k].is_floating_point()) ** 0.5

    inputs = [dist(_weights_of(c)) for c in ckpts]
    soup = fuse(ckpts, "linear", out=tmp_path / "soup", base=base, show_progress=False)
    up = json.loads((soup.out / "fusion.json").read_text())["extra"]["update"]
    assert up["input_update_norms"] == pytest.approx(inputs, rel=1e-9)
    assert up["update_norm"] == pytest.approx(dist(_weights_of(soup.out)), rel=1e-6)
    assert up["relative_update"] == pytest.approx(up["update_norm"] / (sum(inputs) / 3), rel=1e-9)
    assert up["relative_update"] < 1.0
    ta = fuse(ckpts, "task_arithmetic", out=tmp_path / "ta", base=base, params={"lambda": 3.0}, show_progress=False)
    assert ta.extra["update"]["relative_update"] > 1.0
    no_base = fuse(ckpts, "linear", out=tmp_path / "nb", show_progress=False)
    assert "update" not in no_base.extra  # without the base there is nothing to measure from


def test_integer_tensors_are_copied_not_averaged(checkpoints, tmp_path):
    base, ckpts = checkpoints
    for i, c in enumerate(ckpts):
        state = _weights_of(c)
        state["extra.ids"] = torch.arange(4, dtype=torch.int64) + 10 * i
        save_file(state, str(c / "model.safetensors"), metadata={"format": "pt"})
    state = _weights_of(base)
    state["extra.ids"] = torch.zeros(4, dtype=torch.int64)
    save_file(state, str(base / "model.safetensors"), metadata={"format": "pt"})
    res = fuse(ckpts, "linear", out=tmp_path / "out", show_progress=False)
    merged = _weights_of(res.out)
    assert merged["extra.ids"].dtype == torch.int64 and merged["extra.ids"].tolist() == [0, 1, 2, 3]
    assert res.copied_tensors == 1


def test_mismatches_fail_cleanly(checkpoints, tmp_path, tiny_bert):
    base, ckpts = checkpoints
    from transformers import BertConfig, BertModel

    _, tok = tiny_bert
    wide = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=48, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=128))
    Embedder(wide, tok, max_length=32, name="wide").save(tmp_path / "wide")
    with pytest.raises(ConfigError, match=r"different architectures \(config.json hidden_size: 32 vs 48\)"):
        fuse([ckpts[0], tmp_path / "wide"], "linear", out=tmp_path / "x", show_progress=False)
    # Another pooling: the message names what differs.
    cls = Embedder.load(str(ckpts[1]))
    from embedlab.text import PoolingConfig

    cls.pooling = PoolingConfig("cls")
    cls.save(tmp_path / "cls")
    with pytest.raises(ConfigError, match="embed differently.*pooling"):
        fuse([ckpts[0], tmp_path / "cls"], "linear", out=tmp_path / "x", show_progress=False)
    # Another tokenizer (one token renamed).
    tok_file = tmp_path / "ckpt2" / "tokenizer.json"
    data = json.loads(tok_file.read_text())
    vocab = data["model"]["vocab"]
    vocab["zzzz-new"] = vocab.pop("[unused1]")
    tok_file.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="different tokenizers"):
        fuse([ckpts[0], ckpts[2]], "linear", out=tmp_path / "x", show_progress=False)
    with pytest.raises(ConfigError, match="needs the base model"):
        fuse(ckpts[:2], "ties", out=tmp_path / "x", show_progress=False)
    with pytest.raises(ConfigError, match="2 weights for 3 models"):
        fuse(ckpts, "linear", out=tmp_path / "x", weights=[1, 2], show_progress=False)
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_mergekit_config(tmp_path):
    cfg = tmp_path / "merge.yaml"
    cfg.write_text("""
merge_method: ties
base_model: base
models:
  - model: a
    parameters: {weight: 0.6, density: 0.5}
  - model: b
    parameters: {weight: 0.4}
parameters: {density: 0.7, lambda: 1.5}
dtype: float32
""")
    kw = load_fusion_config(cfg)
    assert kw == {"models": ["a", "b"], "method": "ties", "base": "base", "weights": [0.6, 0.4],
                  "params": {"density": [0.5, 0.7], "lambda": 1.5}, "seed": 0}
    cfg.write_text("merge_method: ties\nmodels: [{model: a}]\nbase_modle: x\n")
    with pytest.raises(ConfigError, match="base_modle"):
        load_fusion_config(cfg)
    cfg.write_text("merge_method: linear\nmodels: [{model: a, parameters: {density: 0.5}}]\n")
    with pytest.raises(ConfigError, match="density"):
        load_fusion_config(cfg)


def test_greedy_soup_keeps_only_what_does_not_hurt(checkpoints, tmp_path):
    base, ckpts = checkpoints
    names = {str(c): c.name for c in ckpts}
    single = {"ckpt0": 0.70, "ckpt1": 0.80, "ckpt2": 0.75}
    soups = {frozenset({"ckpt1", "ckpt2"}): 0.78,  # worse than ckpt1 alone: ckpt2 dropped
             frozenset({"ckpt1", "ckpt0"}): 0.82}  # better: ckpt0 kept

    def score(path):
        if path in names:
            return single[names[path]]
        members = frozenset(names[m] for m in json.loads(open(f"{path}/fusion.json").read())["models"])
        return soups[members]

    res = greedy_soup(ckpts, score, out=tmp_path / "greedy", show_progress=False)
    record = json.loads((res.out / "fusion.json").read_text())
    assert [names[m] for m in record["extra"]["greedy_soup"]["soup"]] == ["ckpt1", "ckpt0"]
    assert [s["kept"] for s in record["extra"]["greedy_soup"]["steps"]] == [True, False, True]
    _assert_same_weights(res.out, fuse([ckpts[1], ckpts[0]], "linear", out=tmp_path / "ref",
                                       show_progress=False).out, atol=0.0)
    assert not (tmp_path / ".greedy.greedy").exists()
    with pytest.raises(ConfigError, match="dev score"):
        fuse(ckpts, "greedy_soup", out=tmp_path / "x", show_progress=False)


def test_recipe_ends_with_a_fusion_of_its_checkpoints(train_root):
    from embedlab.config import load_recipe
    from embedlab.train import checkpoint as ckpt
    from embedlab.train.trainer import Trainer

    from tiny_training import recipe_file

    tmp = train_root
    recipe = load_recipe(recipe_file(tmp), ["train.save_every=2", "train.keep=3",
                                            "fusion={method: linear, models: [checkpoints], out: soup}"])
    Trainer(recipe, show_progress=False).train()
    out = tmp / "out"
    points = ckpt.list_checkpoints(out)
    assert [p.name for p in points] == ["step-000002", "step-000004", "step-000006"]
    record = json.loads((out / "soup" / "fusion.json").read_text())
    assert record["models"] == [str(p) for p in points]
    soup = _weights_of(out / "soup")
    states = [_weights_of(p) for p in points]
    key = next(iter(soup))
    assert torch.allclose(soup[key], sum(s[key] for s in states) / 3, atol=1e-6)

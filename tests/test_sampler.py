"""Batch samplers: single-task global batches, exact per-task counts per policy, identical order on every rank,
disjoint rank slices, deterministic epochs, exact mid-epoch resume, mixed batches."""
from __future__ import annotations

import json
import math

import pytest

from embedlab.data.samplers import POLICIES, MixedBatchSampler, SingleTaskBatchSampler, SourceInfo
from embedlab.errors import ConfigError, UnknownChoiceError

# Full global batches: a 803//16 = 50, b 57//16 = 3 -> ir 53;  c 101//8 = 12, d 33//8 = 4 -> sts 16.
SOURCES = [SourceInfo("a", "ir", 803), SourceInfo("c", "sts", 101), SourceInfo("b", "ir", 57),
           SourceInfo("d", "sts", 33)]
BATCH = {"ir": 16, "sts": 8}
OPTIONS = {"temperature": {"temperature": 2.0}, "ratio": {"ratio": {"ir": 3, "sts": 1}}}
# Hand-computed steps per epoch (see the samplers module docstring):
#   temperature T=2: w = sqrt(53) = 7.28, sqrt(16) = 4; K/w: ir 7.28, sts 4 -> sts binds; ir = floor(7.28*16/4) = 29
#   ratio 3:1: K/w: ir 17.7, sts 16 -> sts binds; ir = 3 * 16 = 48
EXPECTED_STEPS = {"proportional": {"ir": 53, "sts": 16}, "round_robin": {"ir": 53, "sts": 16},
                  "temperature": {"ir": 29, "sts": 16}, "ratio": {"ir": 48, "sts": 16}}


def sampler(policy="proportional", world_size=1, rank=0, seed=0, sources=SOURCES, **kw):
    return SingleTaskBatchSampler(sources, BATCH, policy=policy, world_size=world_size, rank=rank, seed=seed,
                                  **{**OPTIONS.get(policy, {}), **kw})


def signature(batches):
    return [(b.source, b.task, tuple(b)) for b in batches]


@pytest.mark.parametrize("policy", POLICIES)
def test_single_task_single_source_batches_with_exact_counts(policy):
    s = sampler(policy)
    batches = list(s)
    assert len(batches) == len(s) == sum(EXPECTED_STEPS[policy].values())
    assert s.steps_per_task() == EXPECTED_STEPS[policy]
    counts = {"ir": 0, "sts": 0}
    seen = set()
    for b in batches:
        assert {src for src, _ in b} == {b.source}  # one source file per step
        assert b.task == SOURCES[b.source].task and len(b) == BATCH[b.task]
        assert all(0 <= i < SOURCES[src].size for src, i in b)
        counts[b.task] += 1
        seen.update(b)
    assert counts == EXPECTED_STEPS[policy]
    assert len(seen) == sum(len(b) for b in batches)  # no example twice in an epoch


def test_temperature_one_equals_proportional_counts_and_large_t_equalises():
    assert sampler("temperature", temperature=1.0).steps_per_task() == EXPECTED_STEPS["proportional"]
    assert sampler("temperature", temperature=1e9).steps_per_task() == {"ir": 16, "sts": 16}


def reference_capped(available, weights):
    """The documented rule written out directly: b = argmin K_t / w_t, c_t = floor(w_t K_b / w_b)."""
    b = min((t for t in available if weights[t] > 0), key=lambda t: available[t] / weights[t])
    return {t: min(available[t], math.floor(weights[t] * available[b] / weights[b] + 1e-9)) for t in available}


@pytest.mark.parametrize("ratio", [{"ir": 1, "sts": 1}, {"ir": 1, "sts": 4}, {"ir": 5, "sts": 2}, {"ir": 1, "sts": 0},
                                   {"ir": 0.5, "sts": 0.25}])
def test_ratio_policy_counts(ratio):
    s = sampler("ratio", ratio=ratio)
    steps = s.steps_per_task()
    assert steps == reference_capped(s.batches_per_task(), ratio)
    assert all(steps[t] <= s.batches_per_task()[t] for t in steps)
    assert any(steps[t] == s.batches_per_task()[t] for t in steps if ratio[t] > 0)  # the binding task is used fully
    if all(ratio.values()):
        assert steps["ir"] * ratio["sts"] == pytest.approx(steps["sts"] * ratio["ir"], abs=ratio["sts"])
    assert [b.task for b in s].count("sts") == steps["sts"]


def test_round_robin_alternates_tasks():
    tasks = [b.task for b in sampler("round_robin")]
    assert tasks[:32] == ["ir", "sts"] * 16 and tasks[32:] == ["ir"] * 37


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_every_rank_same_order_and_slices_form_the_global_batch(policy, world_size):
    reference = sampler(policy).global_batches()
    ranks = [list(sampler(policy, world_size, r)) for r in range(world_size)]
    assert all(len(r) == len(reference) for r in ranks)
    for step, glob in enumerate(reference):
        parts = [ranks[r][step] for r in range(world_size)]
        assert {(p.source, p.task) for p in parts} == {(glob.source, glob.task)}
        assert all(len(p) == len(glob) // world_size for p in parts)
        assert [x for p in parts for x in p] == list(glob)  # contiguous slices, in rank order, disjoint
    assert len(sampler(policy, world_size)) == len(reference)


def test_set_epoch_changes_order_deterministically():
    s = sampler("proportional")
    e0 = signature(s)
    s.set_epoch(1)
    e1 = signature(s)
    assert e0 != e1 and sorted(b[1] for b in e0) == sorted(b[1] for b in e1)
    other = sampler("proportional")
    other.set_epoch(1)
    assert signature(other) == e1
    other.set_epoch(0)
    assert signature(other) == e0
    assert signature(sampler("proportional", seed=1)) != e0


@pytest.mark.parametrize("policy", POLICIES)
def test_mid_epoch_resume_yields_the_remaining_sequence(policy):
    straight = sampler(policy, world_size=2, rank=1)
    straight.set_epoch(3)
    full = signature(straight)
    first = sampler(policy, world_size=2, rank=1)
    first.set_epoch(3)
    it = iter(first)
    done = [next(it) for _ in range(11)]
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON round trip (checkpoint files)
    assert state["epoch"] == 3 and state["position"] == 11
    resumed = sampler(policy, world_size=2, rank=1)
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # the trainer's loop calls set_epoch again: the resume point must survive it
    rest = signature(resumed)
    assert signature(done) + rest == full
    assert resumed.position == len(resumed)
    resumed.set_epoch(4)  # and the next epoch is the one an uninterrupted run would see
    straight.set_epoch(4)
    assert signature(resumed) == signature(straight)


def test_resume_with_explicit_batches_done_and_other_world_size():
    s = sampler("ratio")
    full = s.global_batches()
    state = s.state_dict(batches_done=7)
    for world_size in (2, 4):  # the global sequence does not depend on the world size
        parts = []
        for r in range(world_size):
            resumed = sampler("ratio", world_size=world_size, rank=r)
            resumed.load_state_dict(state)
            parts.append(list(resumed))
        glued = [[x for p in step for x in p] for step in zip(*parts)]
        assert glued == [list(b) for b in full[7:]]


def test_resume_refuses_a_different_configuration():
    state = sampler("proportional").state_dict()
    with pytest.raises(ConfigError, match="different configuration"):
        sampler("round_robin").load_state_dict(state)
    with pytest.raises(ConfigError, match="different configuration"):
        sampler("proportional", seed=5).load_state_dict(state)
    with pytest.raises(ValueError):
        sampler().state_dict(batches_done=10_000)


def test_configuration_errors():
    with pytest.raises(ConfigError, match="divisible by the world size"):
        SingleTaskBatchSampler(SOURCES, {"ir": 16, "sts": 6}, world_size=4, rank=0)
    with pytest.raises(ConfigError, match="no batch size for task"):
        SingleTaskBatchSampler(SOURCES, {"ir": 16}, world_size=1, rank=0)
    with pytest.raises(UnknownChoiceError, match="valid choices: proportional, ratio, round_robin, temperature"):
        sampler("greedy")
    with pytest.raises(ConfigError, match="missing: sts"):
        sampler("ratio", ratio={"ir": 1})
    with pytest.raises(ConfigError, match="needs ratio"):
        SingleTaskBatchSampler(SOURCES, BATCH, policy="ratio", world_size=1, rank=0)
    with pytest.raises(ConfigError, match="rank"):
        sampler(world_size=2, rank=2)
    with pytest.raises(ConfigError, match="no source has a full global batch"):
        SingleTaskBatchSampler([SourceInfo("x", "ir", 3)], {"ir": 16}, world_size=1, rank=0)


def test_small_source_is_never_sampled(caplog):
    s = SingleTaskBatchSampler(SOURCES + [SourceInfo("tiny", "ir", 5)], BATCH, world_size=1, rank=0)
    assert "never sampled" in caplog.text and all(b.source != 4 for b in s)


def test_mixed_batches():
    s = MixedBatchSampler(SOURCES, 32, world_size=1, rank=0, seed=3)
    batches = list(s)
    total = sum(x.size for x in SOURCES)
    assert len(batches) == len(s) == total // 32
    flat = [x for b in batches for x in b]
    assert len(set(flat)) == len(flat) and all(0 <= i < SOURCES[src].size for src, i in flat)
    assert any(len({src for src, _ in b}) > 1 for b in batches) and all(b.task is None for b in batches)
    for world_size in (2, 4):
        ranks = [list(MixedBatchSampler(SOURCES, 32, world_size=world_size, rank=r, seed=3)) for r in
                 range(world_size)]
        assert [[x for p in step for x in p] for step in zip(*ranks)] == [list(b) for b in batches]
    s.set_epoch(1)
    it = iter(s)
    head = [list(next(it)) for _ in range(5)]
    resumed = MixedBatchSampler(SOURCES, 32, world_size=1, rank=0, seed=3)
    resumed.load_state_dict(s.state_dict())
    fresh = MixedBatchSampler(SOURCES, 32, world_size=1, rank=0, seed=3)
    fresh.set_epoch(1)
    assert head + [list(b) for b in resumed] == [list(b) for b in fresh]
    assert [list(b) for b in fresh] != [list(b) for b in batches]

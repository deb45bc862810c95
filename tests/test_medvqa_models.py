"""The Med-VQA model library on its ``tiny`` profile: every model trains, saves, loads and answers; the image-centric
batches give the per-sample loop's outputs; resuming equals an uninterrupted run; VQAMix draws lambda per batch; CR
routes by its type classifier; the blank and shuffled image conditions are what they say; bad recipes and model
folders get clear errors."""
from __future__ import annotations

import json

import pytest
import torch

from embedlab.errors import ConfigError, ModelError


@pytest.fixture(scope="module")
def small(data_root):
    """VQA-RAD val-train / val restricted to 10 images (about 100 questions)."""
    from embedlab.medvqa.datasets import load_dataset

    train, val = load_dataset("vqa-rad", "val-train"), load_dataset("vqa-rad", "val")
    images = sorted({r.image for r in train})[:10]
    return [r for r in train if r.image in images], [r for r in val if r.image in images]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.mark.parametrize("name", ["cnn-san", "cnn-ban", "mevf-san", "mevf-ban", "mevf-ban-36", "cr", "mmq",
                                  "coattention", "ban-minilm-prior"])
def test_every_model_trains_saves_loads_and_answers(name, small, tmp_path):
    from embedlab.medvqa.evaluate import evaluate_model, predict
    from embedlab.medvqa.models import load_model
    from embedlab.medvqa.train import train_model

    train, val = small
    trained = train_model(name, "tiny", train, tmp_path / "m", seed=0, eval_records=val)
    log = [json.loads(line) for line in (tmp_path / "m" / "train_log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log if "epoch" in row] == [0, 1]
    assert all(row["loss"] == row["loss"] and row["loss"] > 0 for row in log if "epoch" in row)
    before = predict(trained, val)
    loaded = load_model(tmp_path / "m")
    after = predict(loaded, val)
    assert [p["answer"] for p in before] == [p["answer"] for p in after]
    assert all(p["answer"] in trained.answers.answers for p in after)
    top = after[0]["top"]
    assert len(top) == 5 and top[0][0] == after[0]["answer"] and all(a[1] >= b[1] for a, b in zip(top, top[1:]))
    result = evaluate_model(loaded, val, train_answers=[r.answer for r in train])
    s = result["scores"]
    assert {"overall", "blank_overall", "shuffled_overall", "image_reliance"} <= set(s)
    assert s["image_reliance"] == pytest.approx(s["overall"] - s["blank_overall"])


def test_a_training_step_changes_the_weights_and_the_loss_falls(small, tmp_path):
    from embedlab.medvqa.train import Trainer

    train, _ = small
    t = Trainer("mevf-ban", "tiny", train, tmp_path / "m", seed=0, train_overrides={"epochs": 12, "lr": 0.01})
    trained = t.run()
    losses = [row["loss"] for row in trained.info["history"]]
    assert len(losses) == 12 and losses[-1] < losses[0] * 0.8


def test_image_centric_batches_give_the_per_sample_outputs(small):
    """Same batch, eval-mode BatchNorm: the image side once per image equals once per question (loss and grads)."""
    from embedlab.medvqa.imagebank import ImageBank
    from embedlab.medvqa.models import build_model, model_settings
    from embedlab.medvqa.train import QuestionInputs, forward_batch, prepare
    from embedlab.medvqa.vocab import AnswerVocab, QuestionVocab

    train, _ = small
    settings, _ = model_settings("mevf-ban", "tiny")
    qv, av = QuestionVocab.build(train), AnswerVocab.build(train)
    bank = ImageBank.build(train, [settings["cnn_size"], settings["cdae_size"]])
    data = prepare(train, bank, QuestionInputs(settings, qv), av)
    torch.manual_seed(0)
    net = build_model("mevf-ban", settings, qv, av).eval()
    idx = torch.arange(40)
    q, rows, targets, _ = data.take(idx)
    assert len(torch.unique(rows)) < len(rows)  # the batch really repeats images
    grads = []
    for per_sample in (True, False):
        net.zero_grad()
        loss = net.loss(forward_batch(net, bank, None, q, rows, per_sample=per_sample), targets)
        loss.backward()
        grads.append((float(loss.detach()), [p.grad.clone() for p in net.parameters() if p.grad is not None]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    for a, b in zip(grads[0][1], grads[1][1]):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("name", ["mevf-ban", "cr"])  # CR: its type classifier is frozen before the epochs
def test_a_stopped_run_resumes_to_the_uninterrupted_result(name, small, tmp_path):
    from embedlab.medvqa.train import train_model

    train, val = small
    full = train_model(name, "tiny", train, tmp_path / "full", seed=3, train_overrides={"epochs": 3})
    train_model(name, "tiny", train, tmp_path / "cut", seed=3, train_overrides={"epochs": 1})
    resumed = train_model(name, "tiny", train, tmp_path / "cut", seed=3, train_overrides={"epochs": 3})
    epochs = [json.loads(x).get("epoch") for x in (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()]
    assert [e for e in epochs if e is not None] == [0, 1, 2]  # epoch 0 was not trained twice
    for (k, a), b in zip(full.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(a, b), k


def test_vqamix_draws_a_new_lambda_for_every_batch_and_mixes_within_a_question_type(small, tmp_path):
    from embedlab.medvqa.train import Trainer, mix_partners

    train, _ = small
    t = Trainer("mevf-san", "tiny", train, tmp_path / "m", seed=0, train_overrides={"vqamix": True, "epochs": 1})
    t.run()
    assert len(t.lambdas) >= 3 and len(set(t.lambdas)) == len(t.lambdas)
    assert all(0.0 < lam < 1.0 for lam in t.lambdas)
    types = ["PRES", "POS", "PRES", "PRES", "POS", "SIZE"]
    perm = mix_partners(types, True, torch.Generator().manual_seed(1))
    assert [types[int(j)] for j in perm] == types and sorted(perm.tolist()) == list(range(6))


def test_cr_routes_by_answer_type_in_training_and_by_its_classifier_in_prediction(small, tmp_path):
    from embedlab.medvqa.train import Trainer

    train, _ = small
    t = Trainer("cr", "tiny", train, tmp_path / "m", seed=0, train_overrides={"type_epochs": 8})
    trained = t.run()
    net = trained.net
    stage = [json.loads(x) for x in (tmp_path / "m" / "train_log.jsonl").read_text().splitlines()
             if json.loads(x).get("stage") == "type-classifier"][0]
    assert stage["holdout_questions"] > 0 and 0 <= stage["holdout_acc"] <= 1
    q, rows, _, closed = t.data.take(torch.arange(20))
    regions = net.encode_images({s: p[rows] for s, p in t.bank.pixels.items()},
                                None if t.codes is None else t.codes[rows])
    with torch.no_grad():
        forced = net(regions, q, closed=closed)
        routed = net(regions, q)
        predicted = net.predict_closed(q)
    closed_idx, open_idx = net.idx_closed, net.idx_open
    for i in range(20):
        finite = (forced[i] > -1e3).nonzero().flatten()
        expected = closed_idx if closed[i] else open_idx
        assert sorted(finite.tolist()) == sorted(expected.tolist())
        ref = forced[i] if bool(predicted[i]) == bool(closed[i]) else None
        if ref is not None:
            assert torch.allclose(routed[i], ref)


def test_the_blank_bank_is_one_grey_and_the_shuffled_bank_moves_every_image(small):
    from embedlab.medvqa.imagebank import ImageBank

    train, _ = small
    bank = ImageBank.build(train, [24])
    blank = bank.blank().pixels[24]
    assert torch.all(blank == blank.flatten()[0]) and float(blank.flatten()[0]) == pytest.approx(
        float(bank.pixels[24].mean()), rel=1e-5)
    for seed in range(5):
        shuffled = bank.shuffled(seed).pixels[24]
        assert all(not torch.equal(shuffled[i], bank.pixels[24][i]) for i in range(len(bank)))
        assert sorted(float(x.sum()) for x in shuffled) == pytest.approx(sorted(float(x.sum())
                                                                                for x in bank.pixels[24]))


def test_the_holdout_keeps_twin_questions_together(small):
    from embedlab.medvqa.splits import twin_key
    from embedlab.medvqa.train import holdout_split

    train, _ = small
    fit, hold = holdout_split(train, 0.2, 0)
    assert hold and fit and len(fit) + len(hold) == len(train)
    assert not {twin_key(r) for r in fit} & {twin_key(r) for r in hold}


def test_image_norm_normalises_every_region(small):
    from embedlab.medvqa.imagebank import ImageBank
    from embedlab.medvqa.models import build_model, model_settings
    from embedlab.medvqa.vocab import AnswerVocab, QuestionVocab

    train, _ = small
    settings, _ = model_settings("cnn-ban", "tiny", model_overrides={"image_norm": True})
    net = build_model("cnn-ban", settings, QuestionVocab.build(train), AnswerVocab.build(train)).eval()
    bank = ImageBank.build(train, [settings["cnn_size"]])
    regions = net.encode_images(bank.pixels)
    assert torch.allclose(regions.mean(-1), torch.zeros(regions.shape[:2]), atol=1e-5)
    std = regions.std(-1, unbiased=False)  # 1 up to LayerNorm's eps, which matters for tiny ReLU features
    assert bool(((std > 0.5) & (std <= 1.0 + 1e-4)).all())
    plain = build_model("cnn-ban", {**settings, "image_norm": False}, QuestionVocab.build(train),
                        AnswerVocab.build(train)).eval()
    assert plain.image_norm is None and not torch.allclose(plain.encode_images(bank.pixels).mean(-1),
                                                           torch.zeros(regions.shape[:2]), atol=1e-3)


def test_profiles_and_overrides_are_checked():
    from embedlab.medvqa.models import model_settings

    model, train = model_settings("mevf-ban", "paper")
    assert (model["hidden"], model["emb_dim"], train["batch_size"], train["epochs"], train["lr"]) == \
        (1024, 600, 32, 20, 0.005)
    assert model_settings("mevf-ban", "cpu")[1]["batching"] == "image"
    with pytest.raises(ConfigError, match="unknown key.*hiden"):
        model_settings("mevf-ban", "cpu", model_overrides={"hiden": 3})
    with pytest.raises(ConfigError, match="profile"):
        model_settings("mevf-ban", "gpu")


def test_the_device_setting_is_checked(small, tmp_path):
    from embedlab.medvqa.train import Trainer, resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device"):
        Trainer("mevf-ban", "tiny", small[0], tmp_path, train_overrides={"device": "tpu"})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            Trainer("mevf-ban", "tiny", small[0], tmp_path, train_overrides={"device": "cuda"})


def test_bad_recipes_and_model_folders_get_clear_errors(tmp_path):
    from embedlab.medvqa.models import load_model
    from embedlab.medvqa.recipe import load_recipe

    bad = tmp_path / "r.yaml"
    bad.write_text("model: mevf-ban\nprofile: tiny\ntrain: {epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"r\.yaml.*unknown key.*epoch"):
        load_recipe(bad)
    bad.write_text("model: mevf-bann\n")
    with pytest.raises(ConfigError, match="mevf-bann"):
        load_recipe(bad)
    with pytest.raises(ModelError, match="model.json is missing"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(ModelError, match="not a valid Med-VQA model"):
        load_model(tmp_path)


def _export(folder, records, image_src):
    """A dataset-tool export in the MEVF layout: trainset.json, valset.json, images/."""
    import shutil

    (folder / "images").mkdir(parents=True)
    for split, part in (("train", records[: len(records) * 3 // 4]), ("val", records[len(records) * 3 // 4:])):
        rows = [{"qid": r.qid, "image_name": r.image, "question": r.question, "answer": r.answer,
                 "answer_type": r.answer_type, "question_type": r.question_type, "image_organ": r.organ}
                for r in part]
        (folder / f"{split}set.json").write_text(json.dumps(rows))
    for name in {r.image for r in records}:
        shutil.copy(image_src / name, folder / "images" / name)


def test_a_dataset_export_trains_through_a_recipe_unchanged(small, tmp_path):
    from embedlab.medvqa.datasets import image_path
    from embedlab.medvqa.recipe import VQARecipe, run_recipe

    train, _ = small
    _export(tmp_path / "export", train, image_path(train[0]).parent)
    recipe = VQARecipe(model="mevf-ban", profile="tiny", dataset=str(tmp_path / "export"), train_split="train",
                       eval_split="val", output_dir=str(tmp_path / "m")).check()
    assert recipe.resolved_task().name == "export:val"
    trained, result = run_recipe(recipe)
    assert result["counts"]["n"] == len(train) - len(train) * 3 // 4
    assert trained.info["dataset"] == str(tmp_path / "export")


def test_a_missing_image_is_an_error_naming_the_file_and_the_record(small, tmp_path):
    from dataclasses import replace

    from embedlab.errors import DataError
    from embedlab.medvqa.train import train_model

    train, _ = small
    broken = [replace(train[0], qid="q-broken", image=str(tmp_path / "gone.png")), *train[1:]]
    with pytest.raises(DataError, match=r"gone\.png.*q-broken"):
        train_model("mevf-ban", "tiny", broken, tmp_path / "m")


def test_a_cached_cdae_pretraining_equals_a_fresh_one_and_is_shared_between_models(small, tmp_path, monkeypatch):
    from embedlab.medvqa.train import Trainer

    train, _ = small
    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path / "cache"))
    fresh = Trainer("mevf-ban", "tiny", train, tmp_path / "a", seed=5, train_overrides={"cdae_pretrain_epochs": 2})
    fresh.run()
    assert len(list((tmp_path / "cache" / "medvqa" / "cdae").iterdir())) == 1
    other = Trainer("mevf-san", "tiny", train, tmp_path / "b", seed=5, train_overrides={"cdae_pretrain_epochs": 2})
    other.run()
    log = (tmp_path / "b" / "train_log.jsonl").read_text()
    assert '"cached"' in log  # MEVF-SAN reused MEVF-BAN's pre-training
    assert torch.equal(fresh.codes, other.codes)
    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path / "cache2"))
    again = Trainer("mevf-ban", "tiny", train, tmp_path / "c", seed=5, train_overrides={"cdae_pretrain_epochs": 2})
    again.run()
    assert torch.equal(fresh.codes, again.codes)  # recomputed from scratch: the same
    seed6 = Trainer("mevf-ban", "tiny", train, tmp_path / "d", seed=6, train_overrides={"cdae_pretrain_epochs": 2})
    seed6.run()
    assert not torch.equal(fresh.codes, seed6.codes)


def test_the_output_folder_is_guarded(small, tmp_path):
    """A user's folder is refused untouched; a checkpoint of other settings is not resumed; a folder in use by
    another training is refused."""
    from embedlab.outputs import lock_folder
    from embedlab.medvqa.train import train_model

    train, _ = small
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="did not write"):
        train_model("mevf-ban", "tiny", train, mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    run = tmp_path / "run"
    train_model("mevf-ban", "tiny", train, run, seed=1, train_overrides={"epochs": 1})
    with pytest.raises(ConfigError, match=r"belongs to another run.*settings\.hidden: 16 -> 8"):
        train_model("mevf-ban", "tiny", train, run, seed=1, model_overrides={"hidden": 8},
                    train_overrides={"epochs": 2})
    with pytest.raises(ConfigError, match="seed"):
        train_model("mevf-ban", "tiny", train, run, seed=2, train_overrides={"epochs": 2})
    held = lock_folder(run)
    try:
        with pytest.raises(ConfigError, match="in use by another embedlab Med-VQA training"):
            train_model("mevf-ban", "tiny", train, run, seed=1, train_overrides={"epochs": 2})
    finally:
        held.close()
    train_model("mevf-ban", "tiny", train, run, seed=1, train_overrides={"epochs": 2})  # extending is resuming


def test_instance_pretraining_teaches_the_cnn_which_training_image_it_sees(small, tmp_path):
    """``pretrain_tasks: [instance]``: one class per training image (logged), and after it the CNN's features tell the
    training images apart better than the same CNN untrained (nearest-neighbour identity of shifted copies)."""
    from embedlab.medvqa.train import Trainer, augment

    train, _ = small

    def identity_accuracy(t):
        cnn, rows = t.net.cnns[0], torch.tensor(sorted({int(r) for r in t.data.image_rows.tolist()}))
        pixels = t.bank.pixels[t.settings["cnn_size"]][rows]
        with torch.no_grad():
            cnn.eval()
            ref = torch.nn.functional.normalize(cnn(pixels).mean(1), dim=-1)
            probe = torch.nn.functional.normalize(cnn(augment(pixels, torch.Generator().manual_seed(1))).mean(1),
                                                  dim=-1)
        return float(((probe @ ref.T).argmax(1) == torch.arange(len(rows))).float().mean())

    over = {"pretrain": "multitask", "pretrain_tasks": ["instance"], "epochs": 1}
    before = Trainer("cnn-ban", "tiny", train, tmp_path / "a", seed=0, train_overrides={**over, "pretrain_epochs": 0})
    before.run()
    after = Trainer("cnn-ban", "tiny", train, tmp_path / "b", seed=0, train_overrides={**over, "pretrain_epochs": 60})
    after.run()
    log = [json.loads(line) for line in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert [row["labels"] for row in log if row.get("stage") == "multitask"] == [{"instance": 10}]
    assert identity_accuracy(after) > identity_accuracy(before)
    with pytest.raises(ConfigError, match="pretrain_tasks"):
        Trainer("cnn-ban", "tiny", train, tmp_path / "c", seed=0, train_overrides={"pretrain_tasks": ["colour"]})


def test_augment_shifts_and_rescales_contrast_reproducibly():
    from embedlab.medvqa.train import augment

    x = torch.rand(6, 1, 20, 20)
    a, b = augment(x, torch.Generator().manual_seed(3)), augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.equal(a, x)
    flat = augment(torch.full((2, 1, 8, 8), 0.4), torch.Generator().manual_seed(0))
    assert torch.allclose(flat, torch.full_like(flat, 0.4))  # a constant image stays itself


def test_the_image_prior_adds_an_image_only_answer_head(small):
    """``image_prior``: logits = fusion classifier + an MLP of the mean region; with the fusion's output fixed the
    logits still change with the image, and CR refuses the option."""
    from embedlab.medvqa.imagebank import ImageBank
    from embedlab.medvqa.models import build_model, model_settings
    from embedlab.medvqa.train import QuestionInputs
    from embedlab.medvqa.vocab import AnswerVocab, QuestionVocab

    train, _ = small
    settings, _ = model_settings("cnn-ban", "tiny", model_overrides={"image_prior": True})
    qv, av = QuestionVocab.build(train), AnswerVocab.build(train)
    net = build_model("cnn-ban", settings, qv, av).eval()
    bank = ImageBank.build(train, [settings["cnn_size"]])
    regions = net.encode_images(bank.pixels)[:2]
    question = QuestionInputs(settings, qv)([train[0].question] * 2)
    logits = net(regions, question)
    expected = net.classifier(net.joint(regions, question)) + net.image_prior(regions.mean(1))
    assert torch.allclose(logits, expected, atol=1e-6)
    assert not torch.allclose(net.image_prior(regions[:1].mean(1)), net.image_prior(regions[1:].mean(1)))
    plain = build_model("cnn-ban", {**settings, "image_prior": False}, qv, av)
    assert plain.image_prior is None
    cr_settings, _ = model_settings("cr", "tiny", model_overrides={"image_prior": True})
    with pytest.raises(ValueError, match="image_prior"):
        build_model("cr", cr_settings, qv, av)


def test_a_split_with_one_image_is_refused_before_training_when_shuffled_images_are_asked_for(small, tmp_path):
    from embedlab.medvqa.datasets import image_path
    from embedlab.medvqa.recipe import VQARecipe, run_recipe

    train, _ = small
    folder = tmp_path / "export"
    _export(folder, train, image_path(train[0]).parent)
    val = json.loads((folder / "valset.json").read_text())
    rows = [r for r in val if r["image_name"] == val[0]["image_name"]]  # the val split: questions on one image
    (folder / "valset.json").write_text(json.dumps(rows))
    recipe = VQARecipe(model="cnn-ban", profile="tiny", dataset=str(folder), output_dir=str(tmp_path / "m")).check()
    with pytest.raises(ConfigError, match="shuffled-image condition needs two or more"):
        run_recipe(recipe)
    assert not (tmp_path / "m").exists()  # refused before any training
    recipe = recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"conditions": ["real", "blank"]})})
    _, result = run_recipe(recipe)
    assert "shuffled_overall" not in result["scores"] and result["counts"]["n"] == len(rows)

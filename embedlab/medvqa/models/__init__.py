"""The Med-VQA model library: definitions (definitions.py), networks (network.py, parts.py), and saved models.

    model = build_model("mevf-ban", model_cfg, question_vocab, answer_vocab, closed_answers)
    save_model(folder, trained)            # model.json (everything that rebuilds it) + model.safetensors
    trained = load_model(folder)           # a TrainedModel: network, vocabularies, settings

A saved model is self-contained: its definition name, model settings, vocabularies and the closed answers (CR) are
in ``model.json``; weights in ``model.safetensors``. Loading checks the files and says which is missing or damaged.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ...atomic import atomic_path, write_json
from ...errors import ModelError
from ..vocab import AnswerVocab, QuestionVocab
from .definitions import MODELS, PROFILES, ModelDef, model_settings
from .network import CRNet, FusionNet

__all__ = ["MODELS", "PROFILES", "ModelDef", "model_settings", "build_model", "TrainedModel", "save_model",
           "load_model"]


def build_model(name: str, settings: dict, questions: QuestionVocab, answers: AnswerVocab,
                closed_answers: list[str] | None = None) -> FusionNet:
    spec = MODELS.get(name)
    cls = CRNet if spec.network == "cr" else FusionNet
    return cls(settings, len(questions), answers.answers, closed_answers)


@dataclass
class TrainedModel:
    name: str
    profile: str
    settings: dict  # model settings
    train: dict  # training settings it was trained with
    questions: QuestionVocab
    answers: AnswerVocab
    net: FusionNet
    closed_answers: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # task, seed, data, epochs run, selection

    def describe(self) -> dict:
        return {"model": self.name, "profile": self.profile, "settings": self.settings, "train": self.train,
                "questions": self.questions.to_dict(), "answers": self.answers.to_dict(),
                "closed_answers": self.closed_answers, "info": self.info, "format": 1}


def save_model(folder: str | Path, trained: TrainedModel) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in trained.net.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    write_json(folder / "model.json", trained.describe())
    return folder


def load_model(folder: str | Path) -> TrainedModel:
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_file, weights = folder / "model.json", folder / "model.safetensors"
    for f in (meta_file, weights):
        if not f.is_file():
            raise ModelError(f"{folder} is not a trained Med-VQA model: {f.name} is missing "
                             f"(expected model.json and model.safetensors, written by `embedlab vqa train`)")
    try:
        meta = json.loads(meta_file.read_text())
        questions, answers = QuestionVocab.from_dict(meta["questions"]), AnswerVocab.from_dict(meta["answers"])
        net = build_model(meta["model"], meta["settings"], questions, answers, meta.get("closed_answers"))
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{meta_file}: not a valid Med-VQA model description ({type(e).__name__}: {e})") from None
    try:
        missing, unexpected = net.load_state_dict(load_file(str(weights)), strict=False)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own types for damaged files
        raise ModelError(f"{weights}: cannot read the weights ({type(e).__name__}: {e})") from None
    if missing or unexpected:
        raise ModelError(f"{weights}: weights do not match {meta['model']} (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    net.eval()
    return TrainedModel(meta["model"], meta.get("profile", ""), meta["settings"], meta.get("train", {}), questions,
                        answers, net, meta.get("closed_answers", []), meta.get("info", {}))


def model_folder_has(folder: Path) -> bool:
    return (folder / "model.json").is_file() and (folder / "model.safetensors").is_file()


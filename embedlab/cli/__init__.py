"""The ``embedlab`` command line: a thin typer layer over the same functions Python users call.

One module per verb group, each a typer sub-app whose commands join ``app`` directly (``embedlab eval``, not
``embedlab eval eval``), in this order:

    listing     models, datasets, list
    eval        eval, encode, results
    demo        demo
    train       train
    data        convert, mine
    experiment  experiment
    fuse        fuse
    jobs        jobs submit | run | list | show | cancel | retry
    report      report
    vqa         vqa train | eval (Med-VQA model library)
    vqa_data    vqa-data ingest | extract | review | generate | paraphrase | export | status | ... (dataset tool)
    serve       serve (the web app), users create-admin | add | list | set-role | disable | enable | set-password

``_common`` holds what they share: the consoles and tables, the interrupt note, --no-progress, --version, and ``run``
(error handling and exit statuses: see its docstring). ``main`` is the ``embedlab`` entry point and
``python -m embedlab``. Heavy libraries (torch, transformers) are imported inside the commands, so ``embedlab --help``
stays fast.
"""
from __future__ import annotations

import typer

from . import _common, data, demo, eval, experiment, fuse, jobs, listing, report, serve, train, vqa, vqa_data

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=_common.HELP)
app.callback()(_common._root)
for _group in (listing, eval, demo, train, data, experiment, fuse, jobs, report, vqa, vqa_data, serve):
    app.add_typer(_group.app)


def main() -> None:
    _common.run(app)


__all__ = ["app", "main"]

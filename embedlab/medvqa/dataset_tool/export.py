"""Export: a project's reviewed QA pairs -> a trainable dataset folder (VQA-RAD's MEVF JSON layout) with a card.

    card = export_project(project, "runs/vqa-data/my-export", split_by="case", fractions=(0.8, 0.1, 0.1), seed=0)
    register_export("our-chest", "runs/vqa-data/my-export")      # then load_dataset("our-chest", "train")
    registered_exports()                                          # {"our-chest": {"path": ..., "splits": [...]}}

The folder (written into a staging folder next to ``out`` and renamed into place, so a crash leaves the old export
or the new one; a folder embedlab did not write is never replaced unless ``overwrite=True``):

    trainset.json valset.json testset.json   MEVF rows {qid, image_name, image_organ, answer, answer_type,
                                              question_type, question, phrase_type: "freeform" | "para"}; a split
                                              with no row has no file (the reader refuses an empty one)
    images/                                   the images those rows name, copied from the project
    train.jsonl val.jsonl test.jsonl          every QAPair field + split, status, image_name, phrase_type
    card.json  dataset_card.md                counts per question type x split, closed/open and images per split,
                                              review statistics, lexicon, generation config, seed, exclusions

Which pairs: by default the accepted and edited ones (edits applied), and only when some QA pair has been reviewed:
an unreviewed project is refused unless ``include="all-unreviewed"`` (then every pair not rejected, and the card says
so). ``include="reviewed-or-pending"`` takes accepted, edited and pending pairs. Rejected pairs are never exported; a
pending pair built on a concept a reviewer later rejected is left out too (counted).

Splits: whole units go to one split (a seeded shuffle, then each unit to the split furthest below its share of
pairs; each split with a positive fraction first gets one unit, so small exports still have val and test; units
with an image file are split first, units without one on their own, so the MEVF JSON keeps the fractions): by
``case`` (the default: all images of a case in one split, so no image is in two splits either; the questions come
from the case's report, so a frontal and a lateral film of one study get largely the same question-answer pairs,
which must not straddle train and test), ``image`` (no image in two splits, but the images of a case may be split
apart: only for cases of one image each) or ``patient`` (no patient in two splits; refused when a case has no
patient id). Pairs whose image is missing (flag ``no-image``) cannot train: they are left out of the MEVF JSON but
kept, flagged, in the JSONL.

The registry (``register_export``) is a user file: ``$EMBEDLAB_REGISTRY``, else
``$XDG_CONFIG_HOME/embedlab/medvqa-datasets.json`` (``~/.config/...``), written atomically under a lock; names may
not clash with the built-in datasets. It does not generate or review pairs, and does not train.
"""
from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from ... import __version__
from ...atomic import check_output_dir, replace_dir, staging_dir, write_json, write_text
from ...errors import ConfigError
from .project import Project, now
from .review import effective_concepts, effective_qa, review_stats
from .types import QUESTION_TYPES, CaseImage, Progress, QAPair
from ..export_registry import (NAME, SPLITS, register, registered_export_path, registered_exports,  # noqa: F401
                               registry_path, unregister_export)

SPLIT_BY = ("image", "case", "patient")
INCLUDE = {"accepted": ("accepted", "edited"), "reviewed-or-pending": ("accepted", "edited", "pending"),
           "all-unreviewed": ("accepted", "edited", "pending")}
FORMATS = ("json", "jsonl")
KIND = "Med-VQA dataset-tool export"


# --------------------------------------------------------------------------------------------------- splitting


def assign_splits(units: dict[str, int], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """unit -> split, for units of the given sizes (pairs): see the module docstring."""
    order = sorted(units)
    random.Random(f"{seed}:split").shuffle(order)
    active = [s for s, f in zip(SPLITS, fractions) if f > 0]
    share = dict(zip(SPLITS, fractions))
    counts = dict.fromkeys(SPLITS, 0)
    out: dict[str, str] = {}
    if len(order) >= len(active):  # one unit each first, smallest splits first: val and test are never empty
        for split in reversed(active):
            unit = order.pop(0)
            out[unit] = split
            counts[split] += units[unit]
    total = sum(counts.values())
    for unit in order:
        total += units[unit]
        split = max(active, key=lambda s: (share[s] * total - counts[s], -SPLITS.index(s)))
        out[unit] = split
        counts[split] += units[unit]
    return out


def _check_fractions(fractions) -> tuple[float, float, float]:
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise ConfigError(f"fractions must be three numbers (train, val, test), got {fractions!r}") from None
    if len(values) != 3 or any(v < 0 for v in values) or values[0] <= 0 or abs(sum(values) - 1) > 1e-6:
        raise ConfigError(f"fractions must be three non-negative numbers (train, val, test) summing to 1 with "
                          f"train > 0, got {fractions!r}")
    return values  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------- export


def _image_missing(image: CaseImage | None, images_dir: Path) -> bool:
    return image is None or image.format == "missing" or not image.file or not (images_dir / image.file).is_file()


def _phrase_type(pair: QAPair) -> str:
    return "para" if pair.generated_by.startswith("paraphrase") else "freeform"


def _counts(rows: list[dict], key_type: str = "question_type") -> dict[str, Any]:
    closed = sum(r["answer_type"] == "CLOSED" for r in rows)
    types = Counter(r[key_type] for r in rows)
    return {"rows": len(rows), "closed": closed, "open": len(rows) - closed,
            "by_type": {t: types.get(t, 0) for t in (*QUESTION_TYPES, *sorted(set(types) - set(QUESTION_TYPES)))}}


def export_project(project: Project, out: str | Path, *, split_by: str = "case",
                   fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0, include: str | None = None,
                   formats: tuple[str, ...] = FORMATS, overwrite: bool = False,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Write the export folder ``out`` (see the module docstring); returns the card (also in ``out/card.json``).
    ``progress(images copied, images)`` after each image file."""
    if split_by not in SPLIT_BY:
        raise ConfigError(f"split_by must be one of {', '.join(SPLIT_BY)}, got {split_by!r}")
    if include is not None and include not in INCLUDE:
        raise ConfigError(f"include must be one of {', '.join(INCLUDE)}, got {include!r}")
    formats = tuple(formats)
    if not formats or set(formats) - set(FORMATS):
        raise ConfigError(f"formats must be among {', '.join(FORMATS)}, got {', '.join(formats) or 'none'}")
    fractions = _check_fractions(fractions)
    out = Path(out)
    inside = out.resolve()
    if inside == project.root.resolve() or project.root.resolve() in inside.parents:
        # the project's own folders (images/, ...) are its data: an export there would replace them, even with
        # overwrite (which is about folders of earlier exports)
        raise ConfigError(f"export folder {out} is inside the project {project.root}; export next to it instead")
    check_output_dir(out, overwrite=overwrite, inputs=[project.root], what="export folder")

    with project.writing():
        cases = {c.case_id: c for c in project.cases()}
        qa = effective_qa(project)
        if not qa:
            raise ConfigError(f"project {project.root} has no QA pairs; generate them first "
                              f"(`embedlab vqa-data generate`)")
        reviewed = any(status != "pending" for _, status in qa)
        chosen = include
        if chosen is None:
            if not reviewed:
                raise ConfigError(f"no QA pair of project {project.root} has been reviewed; review them "
                                  f"(`embedlab vqa-data review --kind qa`) or export the unreviewed pairs with "
                                  f"include='all-unreviewed' (the card will say they are unreviewed)")
            chosen = "accepted"
        statuses = INCLUDE[chosen]
        rejected_concepts = {c.concept_id for c, s in effective_concepts(project) if s == "rejected"}
        excluded: Counter = Counter()
        kept: list[tuple[QAPair, str]] = []
        for pair, status in qa:
            if status not in statuses:
                excluded["rejected" if status == "rejected" else f"{status}_not_included"] += 1
            elif status == "pending" and rejected_concepts.intersection(pair.concept_ids):
                excluded["concept_rejected"] += 1  # a person rejected what it was built on; nobody vouched for it
            elif pair.case_id not in cases:
                excluded["unknown_case"] += 1
            else:
                kept.append((pair, status))
        if not kept:
            raise ConfigError(f"no QA pair to export with include={chosen!r} ({dict(excluded)}); accept some in "
                              f"the review or choose another include")

        images = {img.image_id: img for c in cases.values() for img in c.images}
        if split_by == "patient":
            lacking = sorted({p.case_id for p, _ in kept if not cases[p.case_id].patient.strip()})
            if lacking:
                raise ConfigError(f"split_by='patient' needs a patient id for every case; {len(lacking)} case(s) "
                                  f"have none (e.g. {', '.join(lacking[:3])}); give patient ids at ingest or split "
                                  f"by image or case")

        def unit_of(pair: QAPair) -> str:
            if split_by == "patient":
                return cases[pair.case_id].patient.strip()
            if split_by == "case" or not pair.image_id:
                return f"case:{pair.case_id}"
            return pair.image_id

        # units with an image file are split first (they make the MEVF JSON, whose fractions matter for training);
        # units that have none (reports without images) are then split on their own, in the same fractions
        sizes = Counter(unit_of(p) for p, _ in kept)
        pictured = {unit_of(p) for p, _ in kept if not _image_missing(images.get(p.image_id), project.images_dir)}
        split_of = assign_splits({u: n for u, n in sizes.items() if u in pictured}, fractions, seed)
        split_of.update(assign_splits({u: n for u, n in sizes.items() if u not in pictured}, fractions, seed))

        json_rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
        jsonl_rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
        for pair, status in kept:
            split = split_of[unit_of(pair)]
            image = images.get(pair.image_id)
            missing = _image_missing(image, project.images_dir)
            flags = list(pair.flags) + (["no-image"] if missing and "no-image" not in pair.flags else [])
            row = {**pair.to_json(), "flags": flags, "split": split, "status": status,
                   "image_name": image.file if image is not None and not missing else "",
                   "phrase_type": _phrase_type(pair)}
            jsonl_rows[split].append(row)
            if not missing:
                json_rows[split].append({"qid": pair.qa_id, "image_name": image.file, "image_organ": pair.organ,
                                         "answer": pair.answer, "answer_type": pair.answer_type,
                                         "question_type": pair.question_type, "question": pair.question,
                                         "phrase_type": _phrase_type(pair)})
        no_image_left_out = sum(r["image_name"] == "" for rows in jsonl_rows.values() for r in rows)

        card = _card(project, out, cases, json_rows, jsonl_rows, split_by=split_by, fractions=fractions, seed=seed,
                     include=chosen, requested=include, reviewed=reviewed, excluded=excluded,
                     no_image_left_out=no_image_left_out, formats=formats)
        staging = staging_dir(out, "export")
        try:
            files = []
            if "json" in formats:
                (staging / "images").mkdir()
                for split in SPLITS:
                    if json_rows[split]:
                        write_json(staging / f"{split}set.json", json_rows[split])
                        files.append(f"{split}set.json")
                names = sorted({r["image_name"] for rows in json_rows.values() for r in rows})
                for copied, name in enumerate(names, 1):
                    target = staging / "images" / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(project.images_dir / name, target)
                    if progress is not None:
                        progress(copied, len(names))
            if "jsonl" in formats:
                for split in SPLITS:
                    write_text(staging / f"{split}.jsonl",
                               "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in jsonl_rows[split]))
                    files.append(f"{split}.jsonl")
            card["files"] = files + ["card.json", "dataset_card.md"]
            write_json(staging / "card.json", card)
            write_text(staging / "dataset_card.md", render_card(card))
            replace_dir(staging, out, overwrite=overwrite, inputs=[project.root])
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        project.mark_stage("export", out=str(out.resolve()), split_by=split_by, seed=seed, include=chosen,
                           rows={s: card["splits"][s]["json"]["rows"] for s in SPLITS},
                           no_image_left_out=no_image_left_out)
    return card


def _scalars(d: Any) -> dict[str, Any]:
    if not isinstance(d, dict):
        return {}
    return {k: v for k, v in d.items() if isinstance(v, (str, int, float, bool)) or v is None}


def _card(project: Project, out: Path, cases, json_rows, jsonl_rows, *, split_by, fractions, seed, include, requested,
          reviewed, excluded, no_image_left_out, formats) -> dict[str, Any]:
    stages = project.info.get("stages", {}) or {}
    splits = {}
    for s in SPLITS:
        rows, lines = json_rows[s], jsonl_rows[s]
        splits[s] = {
            "json": {**_counts(rows), "images": len({r["image_name"] for r in rows})},
            "jsonl": {**_counts(lines), "no_image": sum("no-image" in r["flags"] for r in lines),
                      "negatives": sum(bool(r["negative"]) for r in lines),
                      "para": sum(r["phrase_type"] == "para" for r in lines)},
            "cases": len({r["case_id"] for r in lines}),
            "patients": len({cases[r["case_id"]].patient for r in lines if cases[r["case_id"]].patient}),
        }
    flags: Counter = Counter(f for rows in jsonl_rows.values() for r in rows for f in r["flags"])
    generate = stages.get("generate", {}) if isinstance(stages.get("generate"), dict) else {}
    return {
        "kind": KIND,
        "name": out.name,
        "project": project.info.get("name", project.root.name),
        "project_path": str(project.root.resolve()),
        "created": now(),
        "embedlab_version": __version__,
        "formats": list(formats),
        "split_by": split_by,
        "fractions": dict(zip(SPLITS, fractions)),
        "seed": seed,
        "include": include,
        "include_requested": requested,
        "reviewed": reviewed,
        "splits": splits,
        "counts_note": "per split, 'json' counts the pairs with an image file (the rows of <split>set.json when the "
                       "json format is written) and 'jsonl' every exported pair (the rows of <split>.jsonl)",
        "by_type_and_split": {t: {s: splits[s]["json"]["by_type"].get(t, 0) for s in SPLITS}
                              for t in QUESTION_TYPES},
        "excluded": dict(sorted(excluded.items())),
        "no_image_left_out_of_json": no_image_left_out,
        "flags": dict(sorted(flags.items())),
        "lexicon": _scalars(stages.get("extract")),
        "generation": {"config": generate.get("config"), "time": generate.get("time"),
                       "paraphrase": _scalars(stages.get("paraphrase")) or None},
        "review": review_stats(project),
        "loading": {"python": f"embedlab.medvqa.datasets.load_export({str(out)!r}, 'train')"},
    }


def render_card(card: dict[str, Any]) -> str:
    """The dataset card as Markdown (for people; card.json holds the same numbers for programs)."""
    s = card["splits"]
    lines = [f"# {card['name']}: a Med-VQA dataset built with the embedlab dataset tool", "",
             f"From project *{card['project']}* (`{card['project_path']}`), {card['created']}, embedlab "
             f"{card['embedlab_version']}.", ""]
    if card["include"] == "all-unreviewed" and not card["reviewed"]:
        lines += ["**Unreviewed**: nobody has reviewed these QA pairs; they are exactly what the generator produced.",
                  ""]
    else:
        lines += [f"Included: QA pairs with review status {', '.join(INCLUDE[card['include']])} "
                  f"(`include={card['include']}`).", ""]
    lines += [f"Split by **{card['split_by']}** (no {card['split_by']} in two splits), fractions "
              f"{card['fractions']}, seed {card['seed']}.", "",
              "## Questions per type and split (pairs with an image: the MEVF JSON rows)", "",
              "| type | " + " | ".join(SPLITS) + " |", "|---|" + "---|" * len(SPLITS)]
    for t, row in card["by_type_and_split"].items():
        lines.append(f"| {t} | " + " | ".join(str(row[x]) for x in SPLITS) + " |")
    lines.append("| **total** | " + " | ".join(str(s[x]["json"]["rows"]) for x in SPLITS) + " |")
    lines += ["", "| split | closed | open | images | cases | patients | JSONL rows | no-image | negatives | para |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for x in SPLITS:
        j, jl = s[x]["json"], s[x]["jsonl"]
        lines.append(f"| {x} | {j['closed']} | {j['open']} | {j['images']} | {s[x]['cases']} | {s[x]['patients']} | "
                     f"{jl['rows']} | {jl['no_image']} | {jl['negatives']} | {jl['para']} |")
    review = card["review"]
    lines += ["", "## Provenance", "",
              f"- Left out: {card['excluded'] or 'nothing'}; pairs without an image file (kept in the JSONL with "
              f"the flag `no-image`, not in the MEVF JSON): {card['no_image_left_out_of_json']}.",
              f"- Flags: {card['flags'] or 'none'}.",
              f"- Review: concepts {review['concept']}, QA pairs {review['qa']}; reviewers: "
              f"{', '.join(review['reviewers']) or 'none'}; {review['decisions']} decisions.",
              f"- Lexicon / extraction: {card['lexicon'] or 'not recorded'}.",
              f"- Generation config: {json.dumps(card['generation']['config'])}.",
              f"- Paraphrases: {card['generation']['paraphrase'] or 'none'}.", "",
              "## Caveats", "",
              "- Answers come from report text, not from reading the images; generated negatives (`negative`: a "
              "finding the report does not mention, answered \"no\") assume the report is complete.",
              "- The answers of all images of one case come from one report: splitting by image puts images of a "
              "case in different splits (use `split_by=case` or `patient` to avoid that).", "",
              "## Loading", "", "```python", "import embedlab.medvqa.datasets",
              card["loading"]["python"], "```", "",
              "or register it (`register_export(name, folder)`) and use `load_dataset(name, 'train')`.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- the registry
# The registry itself is embedlab/medvqa/export_registry.py (the loaders and tasks read it without importing the
# dataset tool); registering from here reserves the built-in dataset and task names.

def register_export(name: str, folder: str | Path, *, replace: bool = False) -> dict[str, Any]:
    """Register an export folder under ``name`` so ``load_dataset(name, split)`` and the task list find it. A name
    already taken by another folder needs ``replace=True``; a built-in dataset's or task's name is refused."""
    from ..datasets import DATASETS
    from ..tasks import TASKS

    if isinstance(name, str) and name.lower() in {n.lower() for n in DATASETS.names()}:
        raise ConfigError(f"{name!r} is a built-in Med-VQA dataset ({', '.join(DATASETS.names())}); choose "
                          f"another name")
    return register(name, folder, replace=replace, reserved=TASKS.names(), reserved_kind="built-in Med-VQA task")

"""The named-dataset registry: what each dataset is, where its files live under the data root, how to load it and
where to get it.

    from embedlab.data import catalog
    catalog.load_sts("stsb")                 # STSSet, default split (test)
    catalog.load_retrieval("scifact", "train")
    catalog.list_datasets("retrieval")

Every dataset is a ``DatasetSpec`` registered in ``DATASETS`` (an ``embedlab.registry.Registry``); adding one is one
``register_dataset(DatasetSpec(...))`` call. Paths are relative to ``embedlab.settings.data_root()`` (the
``EMBEDLAB_DATA`` variable, else the shared mirror next to the project). Some standard test splits are deliberately
absent from the shared mirror ("kept back" for release acceptance); they are registered all the same and load as soon
as their files are present.

Each standard split also carries its expected row counts (``expected_rows``, counted from the public files: STS-B test
has 1379 pairs, as in MTEB). ``load`` compares what it read with them and logs a warning when they differ (a
truncated or edited local copy, or rows dropped by ``skip_bad_rows``); ``check_rows`` returns the comparison for
result records, so a score on a nonstandard copy is never shown as if it were comparable with published numbers.

A missing dataset raises ``DataError`` naming the exact file looked for, the root in use, how to change it, and
where to get the data. ``fetch`` downloads the datasets that have a published archive (BEIR zips, the STS Benchmark
tarball, SentEval files) into the data root, atomically. It is the only function here that touches the network, and
several datasets (samples built for this project) have no download recipe: for those it says where the source is.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .. import settings
from ..atomic import replace_dir
from ..errors import ConfigError, DataError, UnknownChoiceError
from ..registry import Registry
from . import pairs as pairs_loaders
from . import retrieval as retrieval_loaders
from . import sts as sts_loaders
from .readers import BadRows
from .records import IRExample, RetrievalSet, SentenceSet, STSSet
from .splits import load_scifact_dev

KINDS = ("sts", "retrieval", "pairs", "sentences")
# What is counted per kind; the first is the kind's row ("rows" in result details).
COUNTS = {"sts": ("pairs",), "retrieval": ("queries", "documents", "judgements"), "pairs": ("examples",),
          "sentences": ("sentences",)}

log = logging.getLogger("embedlab.data")

# (dataset folder, split, spec, bad-row policy) -> the kind's record
Loader = Callable[[Path, str, "DatasetSpec", BadRows], Any]


@dataclass(frozen=True)
class Download:
    """One file to download. ``members``: a regex over archive member names whose group 1 is the path to write under
    the dataset folder; ``None`` means the URL is the file itself, written as ``target``."""

    url: str
    members: str | None = None
    target: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    kind: str  # one of KINDS
    path: str  # folder relative to the data root
    splits: tuple[str, ...]
    default_split: str
    files: Mapping[str, tuple[str, ...]]  # split -> files (relative to `path`) that must exist to load it
    loader: Loader
    description: str
    licence: str
    source: str  # the real online location: hub id(s) and/or URL(s)
    kept_back: tuple[str, ...] = ()  # splits deliberately absent from the shared mirror
    downloads: tuple[Download, ...] = ()  # empty: no download recipe (see `source`)
    allow_missing_docs: bool = False  # retrieval: judged documents may be absent from the corpus
    notes: str = ""
    # split -> counts of the standard (published) copy, by the names in COUNTS[kind]; a count left out is not
    # checked (e.g. the judgements of a kept-back split nobody here has counted).
    expected_rows: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Catch registration mistakes at import, where the author sees them.
        if self.kind not in KINDS:
            raise ValueError(f"dataset {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.default_split not in self.splits or set(self.files) != set(self.splits):
            raise ValueError(f"dataset {self.name!r}: default split and files must match splits {self.splits}")
        # Count names are checked; split names are not, so a spec derived with dataclasses.replace and fewer splits
        # stays valid (an entry for an absent split is never looked up).
        for split, counts in self.expected_rows.items():
            if not set(counts) <= set(COUNTS[self.kind]):
                raise ValueError(f"dataset {self.name!r}: expected_rows[{split!r}] may only count "
                                 f"{'/'.join(COUNTS[self.kind])}")


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    DATASETS.add(spec.name, spec)
    return spec


# --------------------------------------------------------------------------------------------------- loaders


def _sts_file(read: Callable[[Path, BadRows], list]) -> Loader:
    def load(folder: Path, split: str, spec: DatasetSpec, bad: BadRows) -> STSSet:
        return STSSet(spec.name, split, read(folder / spec.files[split][0], bad))

    return load


def _senteval(subsets: tuple[str, ...]) -> Loader:
    def load(folder: Path, split: str, spec: DatasetSpec, bad: BadRows) -> STSSet:
        return STSSet(spec.name, split, sts_loaders.load_senteval_sts(folder, list(subsets), bad))

    return load


def _beir(folder: Path, split: str, spec: DatasetSpec, bad: BadRows) -> RetrievalSet:
    return retrieval_loaders.load_beir(folder, split, name=spec.name, allow_missing_docs=spec.allow_missing_docs,
                                       skip_bad_rows=bad)


def _scifact(folder: Path, split: str, spec: DatasetSpec, bad: BadRows) -> RetrievalSet:
    if split == "dev":  # not a BEIR split: 100 train queries held out of our training file (data/splits.py)
        return load_scifact_dev(folder.parents[1], skip_bad_rows=bad)
    return _beir(folder, split, spec, bad)


def _ir_examples(folder: Path, split: str, spec: DatasetSpec, bad: BadRows) -> list[IRExample]:
    return pairs_loaders.load_ir_examples(folder / spec.files[split][0], bad)


def _sentences(folder: Path, split: str, spec: DatasetSpec, bad: BadRows) -> SentenceSet:
    return pairs_loaders.load_sentences(folder / spec.files[split][0], spec.name, bad)


# --------------------------------------------------------------------------------------------------- the catalog

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{}.zip"
SIMCSE_SENTEVAL_TAR = "https://huggingface.co/datasets/princeton-nlp/datasets-for-simcse/resolve/main/senteval.tar"
SENTEVAL_SCRIPT = "https://github.com/facebookresearch/SentEval/blob/main/data/downstream/get_transfer_data.bash"
STSB_TAR = "http://ixa2.si.ehu.es/stswiki/images/4/48/Stsbenchmark.tar.gz"
SICK_RAW = "https://raw.githubusercontent.com/alvations/stasis/master/SICK-data/{}"

register_dataset(DatasetSpec(
    name="stsb", kind="sts", path="sts/stsb", splits=("train", "dev", "test"), default_split="test",
    files={s: (f"sts-{s}.csv",) for s in ("train", "dev", "test")},
    loader=_sts_file(sts_loaders.load_stsb),
    description="STS Benchmark (Cer et al., 2017): 5749/1500/1379 pairs, gold 0-5",
    licence="CC BY-SA 4.0 (scores); sentences under their sources' terms",
    source=f"hub: mteb/stsbenchmark-sts; {STSB_TAR}",
    downloads=(Download(STSB_TAR, r"^stsbenchmark/(sts-(?:train|dev|test)\.csv|LICENSE\.txt|readme\.txt)$"),),
    notes="tab-separated despite .csv; 503 rows carry two extra source columns; some sentences end in spaces "
          "(kept).",
    expected_rows={"train": {"pairs": 5749}, "dev": {"pairs": 1500}, "test": {"pairs": 1379}},
))

_STS_YEARS = {
    "sts12": ("2012", "4/40", ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"), 3108),
    "sts13": ("2013", "2/2f", ("FNWN", "headlines", "OnWN"), 1500),
    "sts14": ("2014", "8/8c", ("deft-forum", "deft-news", "headlines", "OnWN", "images", "tweet-news"), 3750),
    "sts15": ("2015", "d/da", ("answers-forums", "answers-students", "belief", "headlines", "images"), 3000),
    "sts16": ("2016", "9/98", ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"), 1186),
}
for _name, (_year, _wiki, _subsets, _n) in _STS_YEARS.items():
    _subsets = tuple(sorted(_subsets))
    _members = "|".join(re.escape(s) for s in _subsets)
    register_dataset(DatasetSpec(
        name=_name, kind="sts", path=f"sts/{_name}", splits=("test",), default_split="test",
        files={"test": tuple(f"STS.{k}.{s}.txt" for s in _subsets for k in ("input", "gs"))},
        loader=_senteval(_subsets),
        description=f"SemEval STS {_year} (SentEval layout), subsets {', '.join(_subsets)} concatenated: "
                    f"{_n} scored pairs, gold 0-5",
        licence="SemEval STS task data; research use (see the year's 00-readme.txt)",
        source=f"hub: mteb/{_name}-sts; SentEval-processed files: {SIMCSE_SENTEVAL_TAR} (SentEval script: "
               f"{SENTEVAL_SCRIPT}); raw release: http://ixa2.si.ehu.es/stswiki/images/{_wiki}/STS{_year}-en-test.zip",
        kept_back=("test",) if _name in ("sts14", "sts15", "sts16") else (),
        downloads=(Download(SIMCSE_SENTEVAL_TAR,
                            rf"(?:^|/)STS/STS{_name[-2:]}-en-test/(STS\.(?:input|gs)\.(?:{_members})\.txt)$"),),
        notes="text is lowercased and tokenised as in the SentEval-processed copy MTEB uses; empty gold lines are "
              "unscored pairs and are skipped.",
        expected_rows={"test": {"pairs": _n}},
    ))

_SICK_FILES = {"train": "SICK_train.txt", "dev": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}
register_dataset(DatasetSpec(
    name="sickr", kind="sts", path="sts/sick", splits=("train", "dev", "test"), default_split="test",
    files={s: (f,) for s, f in _SICK_FILES.items()},
    loader=_sts_file(sts_loaders.load_sick),
    description="SICK relatedness (SemEval-2014 task 1): 4500/500/4927 pairs, gold 1-5; test is the SentEval/SimCSE "
                "SICK-R split",
    licence="CC BY-NC-SA 3.0",
    source="files: " + ", ".join(SICK_RAW.format(f) for f in _SICK_FILES.values()) + "; hub: mteb/sickr-sts "
           "(which evaluates all 9927 SemEval-2014 pairs, not this 4927-pair test split)",
    kept_back=("test",),
    downloads=tuple(Download(SICK_RAW.format(f), target=f) for f in _SICK_FILES.values()),
    expected_rows={"train": {"pairs": 4500}, "dev": {"pairs": 500}, "test": {"pairs": 4927}},
))

register_dataset(DatasetSpec(
    name="scifact", kind="retrieval", path="retrieval/scifact", splits=("train", "dev", "test"), default_split="test",
    files={s: ("corpus.jsonl", "queries.jsonl", f"qrels/{'train' if s == 'dev' else s}.tsv")
           for s in ("train", "dev", "test")},
    loader=_scifact,
    description="SciFact (BEIR): 5183 abstracts; 300 test queries / 339 qrels, 809 train queries / 919 qrels; "
                "dev = 100 train queries held out of the scifact-train training file (embedlab's split)",
    licence="CC BY-NC 2.0",
    source=f"{BEIR_URL.format('scifact')}; hub: mteb/scifact",
    downloads=(Download(BEIR_URL.format("scifact"),
                        r"^scifact/(corpus\.jsonl|queries\.jsonl|qrels/(?:train|test)\.tsv)$"),),
    expected_rows={"train": {"queries": 809, "documents": 5183, "judgements": 919},
                   "dev": {"queries": 100, "documents": 5183, "judgements": 112},
                   "test": {"queries": 300, "documents": 5183, "judgements": 339}},
))

register_dataset(DatasetSpec(
    name="msmarco-sample", kind="retrieval", path="retrieval/msmarco-sample", splits=("test",), default_split="test",
    files={"test": ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")},
    loader=_beir,
    description="MS MARCO passages judged for the 43 TREC-DL-2019 queries plus fillers (5000 passages), graded 1-3; "
                "an easy subset",
    licence="MS MARCO terms (non-commercial research)",
    source=f"built for this project from MS MARCO passage and TREC DL 2019 judgements; full set: "
           f"{BEIR_URL.format('msmarco')}, hub: mteb/msmarco; no download recipe for the sample",
    notes="qrels/test.tsv has no header row (recognised by content). 50 queries in queries.jsonl, 43 judged.",
    expected_rows={"test": {"queries": 43, "documents": 5000, "judgements": 4102}},
))

register_dataset(DatasetSpec(
    name="nfcorpus-pp", kind="retrieval", path="retrieval/nfcorpus-preprocessed", splits=("test",),
    default_split="test", files={"test": ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")},
    loader=_beir,
    description="NFCorpus from the original release, text lowercased and stop-word-filtered by its authors: 3395 docs "
                "(BEIR's 3633 less 238 unjudged distractors), 323 test queries, 12334 qrels graded 1-2. Relative "
                "comparisons only: not comparable with published BEIR numbers",
    licence="NFCorpus terms (see the release page)",
    source="original release: https://www.cl.uni-heidelberg.de/statnlpgroup/nfcorpus/; BEIR variant: "
           f"{BEIR_URL.format('nfcorpus')}, hub: mteb/nfcorpus; no download recipe for this preprocessed copy",
    # Checked: every judged corpus-id is in corpus.jsonl; the 238 missing documents are unjudged distractors, so the
    # qrels need no allowance. The corpus is simply smaller (hence easier) than BEIR's.
    allow_missing_docs=False,
    expected_rows={"test": {"queries": 323, "documents": 3395, "judgements": 12334}},
))

register_dataset(DatasetSpec(
    name="dbpedia-sample", kind="retrieval", path="retrieval/dbpedia-sample", splits=("test",), default_split="test",
    files={"test": ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")},
    loader=_beir,
    description="DBpedia-Entity sample (BEIR layout): 5000 entities, 40 judged queries",
    licence="CC BY-SA 3.0 (DBpedia)",
    source=f"sample of {BEIR_URL.format('dbpedia-entity')} (hub: mteb/dbpedia); no download recipe for the sample",
    kept_back=("test",),
    expected_rows={"test": {"queries": 40, "documents": 5000}},  # judgements: not counted here (kept back)
))

# C-MTEB-style Chinese pair sets, evaluated as STS (Spearman of cosine against the 0/1 label or 0-5 score).
_CMTEB = {
    "lcqmc": ("LCQMC", {"test": "LCQMC.test.tsv", "dev": "LCQMC.dev.tsv"}, "test", "LCQMC question pairs, label 0/1"),
    "bq": ("BQ", {"test": "BQ.test.csv", "dev": "BQ.dev.csv"}, "test", "BQ bank question pairs, label 0/1"),
    "afqmc": ("AFQMC", {"dev": "AFQMC.dev.jsonl"}, "dev", "AFQMC Ant Financial question pairs, label 0/1"),
    "pawsx-zh": ("PAWSX", {"dev": "PAWSX.dev.tsv"}, "dev", "PAWS-X Chinese paraphrase pairs, label 0/1"),
    "atec": ("ATEC", {"train": "atec_nlp_sim_train.tsv", "dev": "ATEC_CCKS.dev.tsv", "test": "ATEC_CCKS.test.tsv"},
             "test", "ATEC question pairs, label 0/1 (train is the competition file, not C-MTEB's split)"),
    "stsb-zh": ("STSB_zh", {"train": "STS-B.train.data", "dev": "STS-B.valid.data", "test": "STS-B.test.data"}, "test",
                "Chinese STS-B, gold 0-5"),
}
_CMTEB_ROWS = {
    "lcqmc": {"test": 12500, "dev": 8802}, "bq": {"test": 10000, "dev": 10000}, "afqmc": {"dev": 4316},
    "pawsx-zh": {"dev": 2000}, "atec": {"train": 39346, "dev": 10000, "test": 10000},
    "stsb-zh": {"train": 5231, "dev": 1458, "test": 1361},
}
for _name, (_folder, _files, _default, _desc) in _CMTEB.items():
    register_dataset(DatasetSpec(
        name=_name, kind="sts", path=f"cmteb-zh/{_folder}",
        splits=tuple(_files), default_split=_default, files={s: (f,) for s, f in _files.items()},
        loader=_sts_file(pairs_loaders.load_cmteb_pairs),
        description=_desc, licence=f"not stated in the mirror; see C-MTEB/{_folder.split('_')[0]} on the hub",
        source=f"hub: C-MTEB/{_folder.split('_')[0]}; no download recipe for these file layouts",
        expected_rows={s: {"pairs": n} for s, n in _CMTEB_ROWS[_name].items()},
    ))

register_dataset(DatasetSpec(
    name="bge-ft-zh", kind="pairs", path="cmteb-zh/STSB_zh", splits=("train",), default_split="train",
    files={"train": ("bge_finetune_data_zh.jsonl",)}, loader=_ir_examples,
    description="2701 Chinese IR training examples in the FlagEmbedding layout, with mined negatives",
    licence="not stated in the mirror (derived from Chinese STS-B)",
    source="FlagEmbedding example fine-tuning data (https://github.com/FlagOpen/FlagEmbedding); no download recipe",
    expected_rows={"train": {"examples": 2701}},
))

register_dataset(DatasetSpec(
    name="unsup-sentences", kind="sentences", path="unsup", splits=("train",), default_split="train",
    files={"train": ("sentences.txt",)}, loader=_sentences,
    description="111,387 unique English sentences for unsupervised training (wiki1m head, WikiQA, SNLI, MR, CR, "
                "SUBJ, MPQA, SciFact); every sentence of an STS/SICK evaluation set removed",
    licence="mixed: each source's own terms",
    source="assembled for this project; its largest part is the head of "
           "https://huggingface.co/datasets/princeton-nlp/datasets-for-simcse/resolve/main/wiki1m_for_simcse.txt; "
           "no download recipe",
    expected_rows={"train": {"sentences": 111387}},
))


# --------------------------------------------------------------------------------------------------- public API


def get_spec(name: str) -> DatasetSpec:
    return DATASETS.get(name)


def list_datasets(kind: str | None = None) -> list[DatasetSpec]:
    if kind is not None and kind not in KINDS:
        raise UnknownChoiceError("dataset kind", kind, KINDS)
    return [spec for _, spec in DATASETS.items() if kind is None or spec.kind == kind]


def _root() -> Path:
    root = settings.data_root()
    if root is None:
        raise DataError(
            f"no local data root: EMBEDLAB_DATA is not set and the default mirror "
            f"{settings.PROJECT_ROOT.parent / 'shared' / 'data'} does not exist; set EMBEDLAB_DATA to the folder "
            f"that holds the datasets"
        )
    return root


def dataset_path(name: str) -> Path:
    """The dataset's folder under the data root (whether or not it exists)."""
    return _root() / get_spec(name).path


def _split(spec: DatasetSpec, split: str | None) -> str:
    split = split or spec.default_split
    if split not in spec.splits:
        raise UnknownChoiceError(f"split of dataset {spec.name!r}", split, spec.splits)
    return split


def missing_files(name: str, split: str | None = None) -> list[Path]:
    """Files the split needs that are absent under the data root (empty: it can be loaded)."""
    spec = get_spec(name)
    folder = dataset_path(name)
    return [folder / f for f in spec.files[_split(spec, split)] if not (folder / f).is_file()]


def is_available(name: str, split: str | None = None) -> bool:
    return settings.data_root() is not None and not missing_files(name, split)


def _require(spec: DatasetSpec, split: str) -> Path:
    folder = dataset_path(spec.name)
    missing = missing_files(spec.name, split)
    if not missing:
        return folder
    if not folder.is_dir():
        what = f"looked for this file, and its folder {folder} does not exist"
    else:
        names = ", ".join(p.relative_to(folder).as_posix() for p in missing[1:4])
        more = f" (also missing: {names}{', ...' if len(missing) > 4 else ''})" if len(missing) > 1 else ""
        what = f"looked for this file and it does not exist{more}"
    env = os.environ.get("EMBEDLAB_DATA")
    where = f"EMBEDLAB_DATA={env}" if env else "the default mirror; set EMBEDLAB_DATA to use another folder"
    kept = (" This split is kept back from the shared mirror for release acceptance; it loads when its files are "
            "present." if split in spec.kept_back else "")
    how = f" Get it from: {spec.source}."
    if spec.downloads:
        how += f" Or run embedlab.data.catalog.fetch({spec.name!r})."
    raise DataError(
        f"dataset {spec.name!r} split {split!r} is not available: {what}. Data root: {_root()} ({where}).{kept}{how}",
        missing[0],
    )


def load(name: str, split: str | None = None, skip_bad_rows: bool | BadRows = False) -> Any:
    """Load any registered dataset; the record type follows its kind (STSSet, RetrievalSet, list[IRExample],
    SentenceSet)."""
    spec = get_spec(name)
    split = _split(spec, split)
    folder = _require(spec, split)
    record = spec.loader(folder, split, spec, BadRows.coerce(skip_bad_rows))
    counts = row_counts(spec, record)
    unit = COUNTS[spec.kind][0]
    if counts[unit] == 0:  # the loaders reject empty files; this catches e.g. every row skipped as bad
        raise DataError(f"dataset {name!r} split {split!r} has no usable {unit} (every row was empty or skipped)",
                        folder)
    check_rows(name, split, record, warn=True)
    return record


def row_counts(spec: DatasetSpec, record: Any) -> dict[str, int]:
    """The counts ``expected_rows`` is compared on, in COUNTS order (the first is the kind's row)."""
    if spec.kind == "retrieval":
        return {"queries": len(record.judged_queries()), "documents": len(record.corpus),
                "judgements": sum(len(judged) for judged in record.qrels.values())}
    if spec.kind == "sts":
        return {"pairs": len(record)}
    if spec.kind == "sentences":
        return {"sentences": len(record.sentences)}
    return {"examples": len(record)}


def check_rows(name: str, split: str, record: Any, *, warn: bool = True) -> dict[str, Any]:
    """Compare a loaded split with the standard copy's counts -> details for result records:
    ``rows`` (the kind's row count), ``expected_rows``, ``nonstandard`` (any expected count differs), and for
    retrieval the other counts (``documents``/``expected_documents``, ...). No expectation: ``rows`` only.
    ``warn`` logs a warning naming the differences."""
    spec = get_spec(name)
    counts = row_counts(spec, record)
    unit = COUNTS[spec.kind][0]
    details: dict[str, Any] = {"rows": counts[unit]}
    expected = spec.expected_rows.get(split)
    if not expected:
        return details
    details["expected_rows"] = expected.get(unit)
    for other in COUNTS[spec.kind][1:]:
        details[other] = counts[other]
        if other in expected:
            details[f"expected_{other}"] = expected[other]
    differ = [f"{counts[k]} {k} (standard: {n})" for k, n in expected.items() if counts[k] != n]
    details["nonstandard"] = bool(differ)
    if differ and warn:
        log.warning("%s/%s: loaded %s. This is not the standard set: its scores are not comparable with published "
                    "ones (a truncated or edited local copy, or rows skipped as bad)", name, split, ", ".join(differ))
    return details


def _load_kind(kind: str, name: str, split: str | None, skip_bad_rows: bool | BadRows) -> Any:
    spec = get_spec(name)
    if spec.kind != kind:
        raise ConfigError(f"dataset {name!r} is a {spec.kind} dataset, not {kind}; use load_{spec.kind}() or load()")
    return load(name, split, skip_bad_rows)


def load_sts(name: str, split: str | None = None, skip_bad_rows: bool | BadRows = False) -> STSSet:
    return _load_kind("sts", name, split, skip_bad_rows)


def load_retrieval(name: str, split: str | None = None, skip_bad_rows: bool | BadRows = False) -> RetrievalSet:
    return _load_kind("retrieval", name, split, skip_bad_rows)


def load_pairs(name: str, split: str | None = None, skip_bad_rows: bool | BadRows = False) -> list[IRExample]:
    return _load_kind("pairs", name, split, skip_bad_rows)


def load_sentences(name: str, split: str | None = None, skip_bad_rows: bool | BadRows = False) -> SentenceSet:
    return _load_kind("sentences", name, split, skip_bad_rows)


# --------------------------------------------------------------------------------------------------- fetch


def fetch(name: str, root: str | Path | None = None, *, force: bool = False, timeout: float = 60.0) -> Path:
    """Download a dataset into ``root`` (default: the data root) and return its folder.

    Everything is downloaded and unpacked into a temporary folder beside the target, then renamed into place, so an
    interrupted fetch leaves no half-written dataset. Files of splits that are already complete are left alone
    unless ``force``.
    """
    spec = get_spec(name)
    if not spec.downloads:
        raise DataError(f"dataset {name!r} has no download recipe. Source: {spec.source}")
    root = Path(root) if root is not None else _root()
    target = root / spec.path
    needed = {f for files in spec.files.values() for f in files}
    if not force and all((target / f).is_file() for f in needed):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.fetch-", dir=target.parent))
    try:
        if target.is_dir():  # keep what is there (e.g. a licence file) and overwrite what we download
            shutil.copytree(target, staging, dirs_exist_ok=True)
        for download in spec.downloads:
            _download_into(download, staging, timeout)
        # overwrite: whatever was there was copied into staging first, so nothing of the user's is lost
        replace_dir(staging, target, overwrite=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _download_into(download: Download, staging: Path, timeout: float) -> None:
    archive = staging / ".download"
    with urllib.request.urlopen(download.url, timeout=timeout) as response, open(archive, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)
    try:
        if download.members is None:
            os.replace(archive, staging / (download.target or Path(download.url).name))
            return
        written = _extract(archive, re.compile(download.members), staging)
        if not written:
            raise DataError(f"no archive member matched {download.members!r}", download.url)
    finally:
        archive.unlink(missing_ok=True)


def _extract(archive: Path, pattern: re.Pattern[str], staging: Path) -> int:
    def place(member: str) -> Path | None:
        match = pattern.search(member)
        if not match:
            return None
        relative = Path(match.group(1))
        if relative.is_absolute() or ".." in relative.parts:  # never write outside the staging folder
            raise DataError(f"unsafe archive member path {member!r}", archive)
        dest = staging / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest

    written = 0
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                dest = None if info.is_dir() else place(info.filename)
                if dest is not None:
                    with zf.open(info) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
                    written += 1
    else:
        with tarfile.open(archive) as tf:
            for info in tf:
                dest = place(info.name) if info.isfile() else None
                if dest is not None:
                    with tf.extractfile(info) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
                    written += 1
    return written



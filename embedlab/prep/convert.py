"""Converters from the local dataset mirror to the training layouts, with a guard against evaluation leakage.

    from embedlab.prep.convert import convert, convert_all
    convert("wikiqa", "train-data/wikiqa.jsonl")            # -> ConvertResult(rows=873, ...)
    convert_all("train-data")                               # every converter + train-data/manifest.json

Each converter is one registered function (``CONVERTERS``) that reads named files under the data root and returns
records; ``convert`` writes them atomically as JSONL in the training layouts of ``data/training.py``:
IR ``{"query", "pos": [...], "neg": [...]}`` and STS ``{"sentence1", "sentence2", "score"}`` (scores in the source's
own scale; the manifest declares the range, and ``TrainingSource`` scales to [0, 1]).

What each converter reads (and, as important, what it does not):

| name          | task | reads                                               | never reads / excludes                  |
|---------------|------|-----------------------------------------------------|-----------------------------------------|
| scifact-train | ir   | SciFact qrels/train.tsv, its queries, corpus        | qrels/test.tsv queries (eval); a fixed  |
|               |      | (title+text)                                        | dev slice of train queries (see below)  |
| medquad       | ir   | MedQuAD question -> answer                          | (no split is an eval set here)          |
| wikiqa        | ir   | WikiQASent-train: label-1 sentences pos,            | WikiQA dev/test                         |
|               |      | label-0 neg                                         |                                         |
| pubmedqa      | ir   | PQA-L question -> [long answer, contexts joined]    | the 500 PMIDs of test_ground_truth.json |
| mediqa-rqe    | ir   | RQE TrainingSet (AMIA 2016): pairs labelled true,   | RQE validation and test sets            |
|               |      | minus pairs whose two questions are the same text   |                                         |
| nli           | ir   | SNLI dev+test triplets, XNLI-en triplets: anchor -> | (SNLI/XNLI are not embedlab eval sets)  |
|               |      | entailment, contradiction as hard negative          |                                         |
| mrpc          | ir   | msr_paraphrase_train.txt, Quality 1 pairs           | msr_paraphrase_test.txt                 |
| stsb-train    | sts  | STS-B sts-train.csv, scores 0-5                     | sts-dev.csv, sts-test.csv               |
| sick-train    | sts  | SICK_train.txt, relatedness 1-5                     | SICK_trial.txt (dev), SICK test         |

The leakage guard (``EvalGuard``). Reading the right file is not enough: STS-B's train split was assembled from the
STS 2012-2014 evaluation sets (1,011 of its pairs are STS12 pairs and 597 STS13 pairs) and shares 12/17 pairs with its
own dev/test; STS12's MSRpar subset is MRPC pairs (375 of MRPC train's paraphrases); SICK train shares pairs with SICK
trial; two SciFact train queries have the text of a test query. So every converter's output is filtered against the
text of every evaluation split registered in the catalog and present under the data root (every split except ``train``
of the ``sts`` and ``retrieval`` datasets; kept-back splits count as soon as their files appear):
- an STS training pair is dropped when the same unordered pair of texts is an evaluation pair;
- an IR example is dropped when its query is an evaluation query; a positive or negative is removed when (query, text)
  is an evaluation STS pair; an example left without positives is dropped.
Texts are compared after case folding and removing everything but letters and digits, so "A man plays." matches
"a man plays ." (tokenised copies of the same sentence). What was dropped is counted in each result and the manifest.
The guard can only compare texts it has: STS-B train also holds test pairs of the kept-back STS14-16 sets, so
``stsb-train`` additionally drops every line listed in the mirror's ``sts/stsb/eval-overlap.tsv`` (1,075 rows of
STS13-16 test pairs; counted per set as ``eval_overlap_list (<sets>)``), and stops if that list is missing.

SciFact dev slice: ``SCIFACT_DEV_SIZE`` train queries (a seeded, fixed choice; ``scifact_dev_query_ids``) are held out
of scifact-train, by text, for checkpoint selection. The slice is defined in ``embedlab.data.splits`` (with
``load_scifact_dev``, which returns it as a RetrievalSet over the full corpus with their train qrels), so that the
catalog can serve it without importing the converters.

It does not mine negatives (``embedlab.prep.mining``), download data (``catalog.fetch``), tokenise or shuffle: records
keep file order, grouped by query in first-seen order.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .. import __version__
from ..atomic import write_json
from ..data import catalog
from ..data.readers import BadRows, check_file, read_delimited, read_jsonl
from ..data.records import IRExample, STSPair
from ..data.retrieval import load_beir, load_qrels, load_queries
from ..data.splits import SCIFACT, normalise, resolve_data_root, scifact_dev_query_ids
from ..data.sts import load_sick, load_stsb
from ..data.training import write_ir_examples, write_sts_pairs
from ..errors import ConfigError, DataError
from ..registry import Registry

STS_INSTRUCTION = "Retrieve semantically similar text."


# --------------------------------------------------------------------------------------------------- the guard


def _pair_key(a: str, b: str) -> frozenset[str]:
    return frozenset((normalise(a), normalise(b)))


@dataclass
class EvalGuard:
    """Normalised texts of evaluation sets: STS pairs (unordered) and retrieval queries."""

    sts_pairs: set[frozenset[str]] = field(default_factory=set)
    queries: set[str] = field(default_factory=set)
    sets: list[str] = field(default_factory=list)  # "name/split" of every evaluation split loaded

    @classmethod
    def from_catalog(cls, data_root: str | Path | None = None) -> EvalGuard:
        """Every non-train split of the catalog's sts and retrieval datasets whose files exist under the root."""
        root = resolve_data_root(data_root)
        guard = cls()
        for spec in catalog.list_datasets():
            if spec.kind not in ("sts", "retrieval"):
                continue
            folder = root / spec.path
            for split in spec.splits:
                if split == "train" or not all((folder / f).is_file() for f in spec.files[split]):
                    continue
                if spec.files[split] == spec.files.get("train"):
                    # A split carved out of train (SciFact's dev slice): its converter holds it out itself; guarding
                    # the whole train file here would drop every training query.
                    continue
                if spec.kind == "sts":
                    pairs = spec.loader(folder, split, spec, BadRows()).pairs
                    guard.sts_pairs.update(_pair_key(p.sentence1, p.sentence2) for p in pairs)
                else:
                    guard.queries.update(normalise(q) for q in _judged_queries(folder, split).values())
                guard.sets.append(f"{spec.name}/{split}")
        return guard

    def is_eval_pair(self, a: str, b: str) -> bool:
        return _pair_key(a, b) in self.sts_pairs

    def is_eval_query(self, query: str) -> bool:
        return normalise(query) in self.queries


def _judged_queries(folder: Path, split: str) -> dict[str, str]:
    # Queries and qrels only: the corpus is not evaluation *queries*, and loading it would cost seconds.
    queries = load_queries(folder / "queries.jsonl")
    qrels = load_qrels(folder / "qrels" / f"{split}.tsv")
    return {qid: text for qid, text in queries.items() if qid in qrels}


def guard_ir(examples: Iterable[IRExample], guard: EvalGuard, dropped: Counter) -> list[IRExample]:
    """Drop examples whose query is an eval query; remove pos/neg texts that form an eval pair with the query."""
    kept = []
    for ex in examples:
        if guard.is_eval_query(ex.query):
            dropped["eval_query"] += 1
            continue
        pos = tuple(p for p in ex.pos if not guard.is_eval_pair(ex.query, p))
        neg = tuple(n for n in ex.neg if not guard.is_eval_pair(ex.query, n))
        dropped["eval_pair"] += len(ex.pos) - len(pos) + len(ex.neg) - len(neg)
        if not pos:
            dropped["no_positive_after_guard"] += 1
            continue
        kept.append(IRExample(ex.query, pos, neg, ex.prompt))
    return kept


def guard_sts(pairs: Iterable[STSPair], guard: EvalGuard, dropped: Counter) -> list[STSPair]:
    kept = []
    for p in pairs:
        if guard.is_eval_pair(p.sentence1, p.sentence2):
            dropped["eval_pair"] += 1
        else:
            kept.append(p)
    return kept


# --------------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Converter:
    name: str
    task: str  # "ir" or "sts"
    build: Callable[[Path, Counter], list]  # (data root, drop counter) -> records, before the guard
    reads: tuple[str, ...]  # files under the data root
    splits: str  # what is read and what is deliberately not
    score_range: tuple[float, float] | None = None
    instruction: str | None = None


CONVERTERS: Registry[Converter] = Registry("converter")


def converter(name: str, *, task: str, reads: Sequence[str], splits: str,
              score_range: tuple[float, float] | None = None, instruction: str | None = None):
    def decorator(build):
        CONVERTERS.add(name, Converter(name, task, build, tuple(reads), splits, score_range, instruction))
        return build

    return decorator


@dataclass(frozen=True)
class ConvertResult:
    name: str
    task: str
    path: Path
    rows: int
    score_range: tuple[float, float] | None
    instruction: str | None
    source_files: tuple[str, ...]
    splits: str
    dropped: dict[str, int]

    def manifest_entry(self, base: Path) -> dict[str, Any]:
        path = self.path.resolve()
        try:
            rel = str(path.relative_to(base.resolve()))
        except ValueError:  # written outside the manifest's folder: keep it absolute
            rel = str(path)
        return {"name": self.name, "task": self.task, "path": rel, "rows": self.rows,
                "score_range": list(self.score_range) if self.score_range else None,
                "instruction": self.instruction, "source_files": list(self.source_files), "splits": self.splits,
                "dropped": self.dropped}


def convert(name: str, out_path: str | Path, data_root: str | Path | None = None,
            guard: EvalGuard | None = None) -> ConvertResult:
    """Run one converter and write its JSONL atomically; returns what was written and what was dropped."""
    spec = CONVERTERS.get(name)
    root = resolve_data_root(data_root)
    for rel in spec.reads:
        check_file(root / rel)  # fail on a missing file before doing any work
    guard = guard if guard is not None else EvalGuard.from_catalog(root)
    dropped: Counter = Counter()
    records = spec.build(root, dropped)
    if spec.task == "ir":
        rows = write_ir_examples(out_path, guard_ir(records, guard, dropped))
    else:
        rows = write_sts_pairs(out_path, guard_sts(records, guard, dropped))
    return ConvertResult(name, spec.task, Path(out_path), rows, spec.score_range, spec.instruction, spec.reads,
                         spec.splits, {k: v for k, v in sorted(dropped.items()) if v})


def convert_all(out_dir: str | Path, data_root: str | Path | None = None,
                names: Sequence[str] | None = None) -> list[ConvertResult]:
    """Every converter (or the named ones) into ``out_dir/<name>.jsonl``, then ``out_dir/manifest.json``."""
    out_dir = Path(out_dir)
    root = resolve_data_root(data_root)
    guard = EvalGuard.from_catalog(root)  # built once: loading every eval set per converter would repeat the work
    results = [convert(n, out_dir / f"{n}.jsonl", root, guard) for n in (names or CONVERTERS.names())]
    write_json(out_dir / "manifest.json", {
        "embedlab_version": __version__,
        "converter_hash": converter_hash(),
        "data_root": str(root.resolve()),
        "eval_sets_guarded": guard.sets,
        "sources": [r.manifest_entry(out_dir) for r in results],
    })
    return results


def converter_hash() -> str:
    """A hash of the code that decides what the training files contain (the converters, the eval guard, the
    catalog of evaluation splits, the SciFact dev slice held out of scifact-train): files built by other code may
    hold rows the current code would drop. It hashes the files' syntax trees without docstrings, so any change to
    the code changes it, while comments, docstrings and line wrapping do not."""
    from ..data import splits as _splits

    return code_hash([Path(__file__), Path(catalog.__file__), Path(_splits.__file__)])


def code_hash(paths: list[Path]) -> str:
    """16 hex digits of sha256 over the Python files' syntax trees with docstrings blanked (see converter_hash)."""
    import ast
    import hashlib

    h = hashlib.sha256()
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                body[0] = ast.Pass()  # a docstring: documentation, not behaviour
        h.update(ast.dump(tree, include_attributes=False).encode())
    return h.hexdigest()[:16]


def check_current(folder: str | Path) -> None:
    """Stop (ConfigError) when ``folder`` holds converter output built by other converter code; folders without a
    manifest (files made by hand or elsewhere) are not checked."""
    manifest = Path(folder) / "manifest.json"
    if not manifest.is_file():
        return
    import json

    try:
        info = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{manifest}: unreadable training-data manifest ({e}); rebuild the folder: embedlab convert "
                          f"--out {folder}") from None
    if not isinstance(info, dict):
        raise ConfigError(f"{manifest}: expected a JSON object (embedlab convert's manifest), got "
                          f"{type(info).__name__}; rebuild the folder: embedlab convert --out {folder}")
    built = info.get("converter_hash")
    if built != converter_hash():
        raise ConfigError(f"{manifest}: these training files were built by other converter code (hash {built}, "
                          f"current {converter_hash()}); rebuild them: embedlab convert --out {folder}")


# --------------------------------------------------------------------------------------------------- helpers


def _group(rows: Iterable[tuple[str, str | None, str | None]], dropped: Counter) -> list[IRExample]:
    """(query, positive or None, negative or None) rows -> one example per query (first-seen order), with
    distinct positives and negatives; a query without a positive is dropped and counted.

    Grouping matters for training: two rows with the same query in one batch would make each other's positive an
    in-batch negative."""
    pos: dict[str, list[str]] = {}
    neg: dict[str, list[str]] = {}
    for query, p, n in rows:
        pos.setdefault(query, [])
        neg.setdefault(query, [])
        if p is not None and p not in pos[query]:
            pos[query].append(p)
        if n is not None and n not in neg[query] and n not in pos[query]:
            neg[query].append(n)
    examples = []
    for query, ps in pos.items():
        if not ps:
            dropped["no_positive"] += 1
            continue
        examples.append(IRExample(query, tuple(ps), tuple(n for n in neg[query] if n not in ps)))
    return examples


def _clean(text: str) -> str:
    return text.strip()


def _tsv_by_header(path: Path, columns: Sequence[str]) -> Iterable[tuple[int, dict[str, str]]]:
    """Rows of a headed TSV as {column: cell} for the named columns; a missing column is a DataError."""
    rows = read_delimited(path, columns=None, delimiter="\t")
    first = next(rows, None)
    if first is None:
        raise DataError(f"empty file (expected a header with {', '.join(columns)})", path, 1)
    line, header = first
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"header lacks column(s) {', '.join(missing)}; it has {', '.join(header)}", path, line)
    index = {c: header.index(c) for c in columns}
    for line, row in rows:
        if len(row) != len(header):
            raise DataError(f"expected {len(header)} tab-separated columns, got {len(row)}", path, line)
        yield line, {c: row[i] for c, i in index.items()}


# --------------------------------------------------------------------------------------------------- SciFact


@converter("scifact-train", task="ir",
           reads=(f"{SCIFACT}/corpus.jsonl", f"{SCIFACT}/queries.jsonl", f"{SCIFACT}/qrels/train.tsv",
                  f"{SCIFACT}/qrels/test.tsv"),
           splits="qrels/train.tsv only, minus the dev slice (scifact_dev_query_ids); test queries are guarded",
           instruction="Given a scientific claim, retrieve documents that support or refute the claim")
def _scifact_train(root: Path, dropped: Counter) -> list[IRExample]:
    data = load_beir(root / SCIFACT, "train")
    # Held out by text, not id: SciFact repeats a few claims under two ids.
    dev = {normalise(data.queries[q]) for q in scifact_dev_query_ids(root)}
    rows = []
    for qid, judged in data.qrels.items():
        if normalise(data.queries[qid]) in dev:
            dropped["dev_slice"] += 1
            continue
        rows.extend((data.queries[qid], data.corpus[d].full_text(), None) for d, grade in judged.items() if grade > 0)
        if not any(grade > 0 for grade in judged.values()):
            dropped["no_positive"] += 1
    return _group(rows, dropped)


# --------------------------------------------------------------------------------------------------- medical QA

MEDQUAD = "pairs/medical/medquad/medquad_qa.jsonl"
PUBMEDQA = "pairs/medical/pubmedqa/ori_pqal.json"
PUBMEDQA_TEST = "pairs/medical/pubmedqa/test_ground_truth.json"
RQE_TRAIN = "pairs/medical/mediqa2019/RQE/MEDIQA2019-Task2-RQE-TrainingSet-AMIA2016.xml"


@converter("medquad", task="ir", reads=(MEDQUAD,), splits="all 16,407 QA pairs (MedQuAD has no eval split here)",
           instruction="Given a medical question, retrieve passages that answer the question")
def _medquad(root: Path, dropped: Counter) -> list[IRExample]:
    path = root / MEDQUAD
    rows = []
    for line, obj in read_jsonl(path):
        question, answer = obj.get("question"), obj.get("answer")
        if not isinstance(question, str) or not isinstance(answer, str):
            raise DataError("expected string fields 'question' and 'answer'", path, line)
        if not question.strip() or not answer.strip():
            dropped["empty"] += 1
            continue
        rows.append((_clean(question), _clean(answer), None))
    return _group(rows, dropped)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(check_file(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON: {exc.msg}", path, exc.lineno) from None


@converter("pubmedqa", task="ir", reads=(PUBMEDQA, PUBMEDQA_TEST),
           splits="PQA-L minus the 500 test PMIDs listed in test_ground_truth.json (500 remain)",
           instruction="Given a biomedical research question, retrieve passages that answer the question")
def _pubmedqa(root: Path, dropped: Counter) -> list[IRExample]:
    data = _read_json(root / PUBMEDQA)
    test = set(_read_json(root / PUBMEDQA_TEST))
    rows = []
    for pmid, item in data.items():
        if pmid in test:
            dropped["test_split"] += 1
            continue
        question = _clean(item.get("QUESTION", ""))
        answer = _clean(item.get("LONG_ANSWER", ""))
        contexts = _clean(" ".join(item.get("CONTEXTS", [])))
        # Two positives per question (the long answer and the abstract's contexts): the multi-positive IR loss uses
        # P=2 positives per query.
        rows.extend((question, text, None) for text in (answer, contexts) if text)
    return _group([r for r in rows if r[0]], dropped)


@converter("mediqa-rqe", task="ir", reads=(RQE_TRAIN,),
           splits="RQE TrainingSet (AMIA 2016) pairs labelled true; validation and test sets are not read",
           instruction="Given a medical question, retrieve questions that it entails")
def _mediqa_rqe(root: Path, dropped: Counter) -> list[IRExample]:
    path = root / RQE_TRAIN
    try:
        pairs = ET.parse(check_file(path)).getroot().iter("pair")
    except ET.ParseError as exc:
        raise DataError(f"malformed XML: {exc}", path, exc.position[0]) from None
    rows = []
    for pair in pairs:
        if pair.get("value") != "true":
            continue
        chq, faq = _clean(pair.findtext("chq") or ""), _clean(pair.findtext("faq") or "")
        if not chq or not faq:
            dropped["empty"] += 1
        elif normalise(chq) == normalise(faq):
            dropped["identical"] += 1  # a question paired with itself teaches nothing and is trivially easy
        else:
            rows.append((chq, faq, None))
    return _group(rows, dropped)


# --------------------------------------------------------------------------------------------------- general pairs

WIKIQA_TRAIN = "pairs/wikiqa/WikiQASent-train.txt"
SNLI = "pairs/nli/snli_devtest_triplets.tsv"
XNLI = "pairs/nli/xnli_en_triplets.tsv"
MRPC_TRAIN = "pairs/mrpc/msr_paraphrase_train.txt"


@converter("wikiqa", task="ir", reads=(WIKIQA_TRAIN,),
           splits="WikiQASent-train only; label-0 candidates of a question are its negatives; questions without a "
                  "label-1 sentence are skipped",
           instruction="Given a question, retrieve Wikipedia sentences that answer the question")
def _wikiqa(root: Path, dropped: Counter) -> list[IRExample]:
    path = root / WIKIQA_TRAIN
    rows = []
    for line, (question, sentence, label) in read_delimited(path, columns=3, delimiter="\t"):
        if label not in ("0", "1"):
            raise DataError(f"label {label!r} is not 0 or 1", path, line)
        rows.append((question, sentence, None) if label == "1" else (question, None, sentence))
    return _group(rows, dropped)


@converter("nli", task="ir", reads=(SNLI, XNLI),
           splits="SNLI dev+test triplets and XNLI-en validation+test triplets (neither is an embedlab eval set)",
           instruction="Given a premise, retrieve a hypothesis that is entailed by the premise")
def _nli(root: Path, dropped: Counter) -> list[IRExample]:
    rows = [(r["anchor"], r["positive"], r["negative"])
            for _, r in _tsv_by_header(root / SNLI, ("anchor", "positive", "negative"))]
    rows += [(r["anchor"], r["entailment"], r["contradiction"])
             for _, r in _tsv_by_header(root / XNLI, ("anchor", "entailment", "contradiction"))]
    # One row per triplet; _group turns (anchor, pos, neg) into the pos and neg lists of the anchor.
    expanded = [(a, p, None) for a, p, _ in rows] + [(a, None, n) for a, _, n in rows]
    return _group(expanded, dropped)


@converter("mrpc", task="ir", reads=(MRPC_TRAIN,),
           splits="msr_paraphrase_train.txt, Quality 1 (paraphrase) pairs; the test file is not read",
           instruction=STS_INSTRUCTION)
def _mrpc(root: Path, dropped: Counter) -> list[IRExample]:
    rows = []
    for _, r in _tsv_by_header(root / MRPC_TRAIN, ("Quality", "#1 String", "#2 String")):
        if r["Quality"] == "1":
            rows.append((r["#1 String"], r["#2 String"], None))
        else:
            dropped["not_paraphrase"] += 1
    return _group(rows, dropped)


# --------------------------------------------------------------------------------------------------- STS

STSB_TRAIN = "sts/stsb/sts-train.csv"
SICK_TRAIN = "sts/sick/SICK_train.txt"


STSB_EVAL_OVERLAP = "sts/stsb/eval-overlap.tsv"


def stsb_overlap_lines(path: Path) -> dict[int, str]:
    """The mirror's list of STS-B train lines (1-based) that are test pairs of STS12-16 -> the sets they occur in.
    It is the only way to see the overlap with the kept-back STS14-16 test sets, whose texts the guard cannot read."""
    out: dict[int, str] = {}
    header: list[str] | None = None
    for line_no, text in enumerate(check_file(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip() or text.startswith("#"):  # the file opens with a commented description
            continue
        cells = text.split("\t")
        if header is None:
            header = cells
            if "line" not in header or "sets" not in header:
                raise DataError(f"header must name the columns line and sets, got {header}", path, line_no)
            continue
        if len(cells) != len(header):
            raise DataError(f"expected {len(header)} tab-separated columns, got {len(cells)}", path, line_no)
        row = dict(zip(header, cells))
        try:
            out[int(row["line"])] = row["sets"]
        except ValueError:
            raise DataError(f"'line' must be a line number, got {row['line']!r}", path, line_no) from None
    if header is None:
        raise DataError("no header line (expected: line, pair_sha1_16, sets)", path)
    return out


@converter("stsb-train", task="sts", reads=(STSB_TRAIN,), score_range=(0.0, 5.0), instruction=STS_INSTRUCTION,
           splits="sts-train.csv only (dev and test are eval sets); pairs listed in eval-overlap.tsv (test pairs of "
                  "STS12-16, kept-back sets included) are dropped, and STS12/13 eval pairs are guarded")
def _stsb_train(root: Path, dropped: Counter) -> list[STSPair]:
    pairs = load_stsb(root / STSB_TRAIN)  # one pair per line, in file order (line = index + 1)
    overlap_file = root / STSB_EVAL_OVERLAP
    if not overlap_file.is_file():
        raise DataError("the list of STS-B train rows that are STS12-16 test pairs is missing; without it, training "
                        "data would hold test pairs of the kept-back STS14-16 sets", overlap_file)
    overlap = stsb_overlap_lines(overlap_file)
    beyond = [n for n in overlap if not 1 <= n <= len(pairs)]
    if beyond:
        raise DataError(f"lists line {beyond[0]}, but {STSB_TRAIN} has {len(pairs)} lines", overlap_file)
    kept = []
    for i, pair in enumerate(pairs, start=1):
        if i in overlap:
            dropped[f"eval_overlap_list ({overlap[i]})"] += 1
        else:
            kept.append(pair)
    return kept


@converter("sick-train", task="sts", reads=(SICK_TRAIN,), score_range=(1.0, 5.0), instruction=STS_INSTRUCTION,
           splits="SICK_train.txt only (SICK_trial is the dev set, SICK test an eval set)")
def _sick_train(root: Path, dropped: Counter) -> list[STSPair]:
    return load_sick(root / SICK_TRAIN)

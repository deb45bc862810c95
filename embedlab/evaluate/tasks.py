"""The evaluation task registry: a task is data (name, type, dataset, split, MTEB name), not code.

``embedlab eval --tasks stsb,sts12,scifact`` looks names up here; the runner (runner.py) dispatches on ``type``.
Adding a benchmark that uses an existing loader is one entry in TASKS. This module does not load or score anything.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..registry import Registry
from ..results import DISPLAY_SCALES, register_task_type

# The text task types (embedlab.results): correlations and nDCG are fractions, shown x100; geometry metrics
# (alignment, uniformity, ratios, ranks) as computed, and never averaged or ranked (uniformity: lower is "better").
for _type, _scale, _ranked in (("sts", 100.0, True), ("retrieval", 100.0, True), ("geometry", 1.0, False)):
    register_task_type(_type, _scale, _ranked)


@dataclass(frozen=True)
class Task:
    name: str  # embedlab name, as typed on the command line
    type: str  # "sts" | "retrieval" | "geometry"
    dataset: str  # a name in embedlab.data.catalog
    split: str
    mteb_name: str  # task_name in the MTEB-format result JSON
    description: str = ""
    # The task instruction CoDiEmb puts before queries and both STS sides ("Instruction: {instruction} Query: ");
    # documents get none. The retrieval ones are MTEB's usual E5-style instructions for these sets.
    instruction: str = ""

    def display(self, value: float) -> float:
        """A computed score of this task on the shown scale (x100 for STS and retrieval)."""
        return value * DISPLAY_SCALES.get(self.type)


STS_INSTRUCTION = "Retrieve semantically similar text."  # the training converters' STS instruction too
_SCIFACT = "Given a scientific claim, retrieve documents that support or refute the claim"
_MSMARCO = "Given a web search query, retrieve relevant passages that answer the query"
_NFCORPUS = "Given a question, retrieve relevant documents that best answer the question"
_DBPEDIA = "Given a query, retrieve relevant entity descriptions from DBPedia"


TASKS: Registry[Task] = Registry("task")

for _task in [
    Task("stsb", "sts", "stsb", "test", "STSBenchmark", "STS Benchmark test (1379 pairs)", STS_INSTRUCTION),
    Task("stsb-dev", "sts", "stsb", "dev", "STSBenchmark", "STS Benchmark dev (1500 pairs): for model selection",
         STS_INSTRUCTION),
    Task("sts12", "sts", "sts12", "test", "STS12", "SemEval 2012, all subsets (3108 pairs)", STS_INSTRUCTION),
    Task("sts13", "sts", "sts13", "test", "STS13", "SemEval 2013 without SMT (1500 pairs)", STS_INSTRUCTION),
    Task("sts14", "sts", "sts14", "test", "STS14", "SemEval 2014 (kept back: loads when present)", STS_INSTRUCTION),
    Task("sts15", "sts", "sts15", "test", "STS15", "SemEval 2015 (kept back: loads when present)", STS_INSTRUCTION),
    Task("sts16", "sts", "sts16", "test", "STS16", "SemEval 2016 (kept back: loads when present)", STS_INSTRUCTION),
    Task("sickr", "sts", "sickr", "test", "SICK-R", "SICK relatedness test (kept back: loads when present)",
         STS_INSTRUCTION),
    Task("sickr-dev", "sts", "sickr", "dev", "SICK-R", "SICK trial split (500 pairs): for model selection",
         STS_INSTRUCTION),
    Task("scifact", "retrieval", "scifact", "test", "SciFact", "SciFact, 5183 docs, 300 test queries", _SCIFACT),
    Task("scifact-train", "retrieval", "scifact", "train", "SciFact",
         "SciFact train queries (809): a dev set for selection; never evaluate a model trained on them", _SCIFACT),
    Task("scifact-dev", "retrieval", "scifact", "dev", "SciFact",
         "100 SciFact train queries held out of the scifact-train training file: checkpoint selection, fusion sweeps",
         _SCIFACT),
    Task("msmarco-sample", "retrieval", "msmarco-sample", "test", "MSMARCO-sample",
         "5000 MS MARCO passages, 43 TREC-DL-2019 queries, graded qrels (an easy subset)", _MSMARCO),
    Task("nfcorpus-pp", "retrieval", "nfcorpus-pp", "test", "NFCorpus-preprocessed",
         "NFCorpus from the original release (lower-cased, stop-words removed): relative comparisons only",
         _NFCORPUS),
    Task("dbpedia-sample", "retrieval", "dbpedia-sample", "test", "DBPedia-sample",
         "5000 DBpedia entities, 40 queries (kept back: loads when present)", _DBPEDIA),
    Task("geometry", "geometry", "stsb", "test", "Geometry",
         "alignment/uniformity/ratios/anisotropy on STS-B test; token geometry on a 1000-sentence sample"),
]:
    TASKS.add(_task.name, _task)

# The defaults of `embedlab eval` and the demo: every task whose data ship in the local mirror.
DEFAULT_TASKS = ["stsb", "sts12", "sts13", "scifact", "msmarco-sample", "nfcorpus-pp"]


def parse_tasks(spec: str | list[str]) -> list[Task]:
    """``"stsb,sts12"`` or a list -> tasks; unknown names raise an error that lists the valid ones."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if not names:
        raise ConfigError(f"no tasks given; valid tasks: {', '.join(TASKS.names())}")
    return [TASKS.get(n) for n in names]


DEFAULT_QUERY_TEMPLATE = "Instruction: {instruction} Query: "


def instruction_prompts(query_template: str = DEFAULT_QUERY_TEMPLATE,
                        types: tuple[str, ...] = ("sts", "retrieval")) -> dict[str, str]:
    """One prompt per MTEB task name (of the task ``types`` given), in the sentence-transformers ``prompts`` layout:
    what a model trained with task instructions saves, so that embedlab, sentence-transformers and MTEB put the same
    text before each task's queries (and both STS sides). Documents get none."""
    return {t.mteb_name: query_template.format(instruction=t.instruction) for _, t in TASKS.items()
            if t.instruction and t.type in types}


def query_prompt_name(prompts: dict[str, str], task: Task) -> str | None:
    """The prompt a model applies to ``task``'s queries / STS sentences: its task-named prompt (MTEB's convention),
    else its generic ``query`` prompt, else none."""
    if task.mteb_name in prompts:
        return task.mteb_name
    return "query" if "query" in prompts else None

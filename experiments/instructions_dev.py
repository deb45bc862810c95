"""Issue 13 item 3: is a model better on the dev tasks with or without task instructions?

    .venv/bin/python experiments/instructions_dev.py MODEL [MODEL ...]      # -> docs/results/instructions_dev.json

Each model is scored on stsb-dev and scifact-dev at 256 tokens with bf16 autocast, (a) without instructions, (b) with
each task's instruction before its queries / STS sides and the instruction tokens left out of the mean (the
experiment runner's setting), and (c), for models whose pooling averages prompt tokens, with them averaged in.
Dev splits only: the choice of `instructions:` in experiments/*.yaml is made from these numbers.
"""
import sys
from dataclasses import replace

import torch

from embedlab.atomic import write_json
from embedlab.evaluate.cache import EmbeddingCache
from embedlab.evaluate.runner import EvalSettings, evaluate
from embedlab.evaluate.tasks import instruction_prompts
from embedlab.text import Embedder

settings = EvalSettings(max_length=256, autocast_dtype=torch.bfloat16, num_threads=2)
results = {}
for name in sys.argv[1:]:
    rows = {}
    settings_list = [("none", {}, None), ("instructions, tokens out of the mean", instruction_prompts(), False)]
    if Embedder.load(name).pooling.include_prompt:
        settings_list.append(("instructions, tokens averaged in", instruction_prompts(), True))
    for label, prompts, include in settings_list:
        model = Embedder.load(name)
        model.prompts, model.default_prompt_name = prompts, None
        if include is not None:
            model.pooling = replace(model.pooling, include_prompt=include)
        scores = evaluate(model, ["stsb-dev", "scifact-dev"], settings=settings, cache=EmbeddingCache())
        rows[label] = {r.task.name: round(100 * r.main_score, 2) for r in scores}
        print(name, label, rows[label], flush=True)
    results[name] = rows
write_json("docs/results/instructions_dev.json", {"max_length": 256, "precision": "bf16", "results": results})

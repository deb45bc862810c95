"""Launched by tests/test_train_zero.py under ``accelerate launch``: train RECIPE into OUTPUT_DIR, stopping after
STOP steps with a checkpoint (the interruption half of the resume check).

Usage: zero_worker.py RECIPE OUTPUT_DIR STOP"""
import sys

from embedlab.config import load_recipe
from embedlab.train.trainer import Trainer

recipe, out, stop = sys.argv[1], sys.argv[2], int(sys.argv[3])
Trainer(load_recipe(recipe, [f"output_dir={out}"]), show_progress=False).train(stop_after=stop)

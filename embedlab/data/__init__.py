"""Datasets: canonical records (records.py), file readers with line-exact errors (readers.py), format loaders
(sts.py, retrieval.py, pairs.py), the named-dataset registry (catalog.py), the splits embedlab defines itself (the
SciFact dev slice, splits.py), and for training: sources with full validation and label scaling (training.py) and
single-task / mixed batch samplers (samplers.py). Converting the mirror into training files and mining negatives
live in ``embedlab.prep``."""

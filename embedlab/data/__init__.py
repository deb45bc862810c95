"""Datasets: canonical records (records.py), file readers with line-exact errors (readers.py), format loaders
(sts.py, retrieval.py, pairs.py) and the named-dataset registry (catalog.py)."""

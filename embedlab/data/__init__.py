"""Datasets: canonical records (records.py), file readers with line-exact errors (readers.py), format loaders
(sts.py, retrieval.py, pairs.py), the named-dataset registry (catalog.py), and for training: sources with full
validation and label scaling (training.py), converters from the local mirror with an eval-leakage guard (convert.py)
and single-task / mixed batch samplers (samplers.py)."""

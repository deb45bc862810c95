"""Evaluation: STS, retrieval and geometry scorers, the task catalog, the embedding cache and the runner that ties
them together (``runner.evaluate``). Nothing here trains."""

"""The Med-VQA domain: medical visual question answering datasets, models, training, evaluation and job kinds.

A sibling of the text domain: it registers its datasets, models, job kinds and display scales with the core
(embedlab.jobkinds, embedlab.results) and never imports the text domain (an import-linter contract says so).
"""

"""Data preparation: converting mirrored datasets into training files, mining hard negatives.

    convert.py   converters from the local dataset mirror to the IR / STS training layouts, with the guard against
                 evaluation leakage and the manifest (``embedlab convert``)
    mining.py    hard-negative mining for IR training files (``embedlab mine``)

Both read through ``embedlab.data`` (readers, records, the catalog, the SciFact dev split in ``data/splits.py``) and
write the training layouts of ``data/training.py``; nothing in ``data/`` imports this package.
"""

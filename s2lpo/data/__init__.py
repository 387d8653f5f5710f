"""Datasets: the synthetic toy task and the preparation of public datasets into verl's parquet schema.
Imports ``algo`` and ``config.paths`` at most."""

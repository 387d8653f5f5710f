"""Configuration: validation of the resolved Hydra config (one checker per group), key domains, paths.
Imports ``algo`` and ``rewards`` (``config.paths`` imports nothing); never the trainers, tracking or above."""

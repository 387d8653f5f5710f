"""Sweeps on SLURM: grids as data, cost, non-blocking submission (submitit), the sweep manifest, status,
the local cluster. May import the trainers and everything below; never ``study``, ``cli`` or ``analysis``."""

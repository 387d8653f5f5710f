"""Models: the offline toy family, a model named by a config role (path, parameters, loading), checkpoints.
Imports ``data``, ``algo`` and ``config.paths`` only."""

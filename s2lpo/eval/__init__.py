"""Evaluation: unbiased pass@k, the evaluation runner, benchmarks, trained runs' checkpoints. Imports
``rollout``, ``models``, ``rewards``, ``tracking``, ``data``, ``config``, ``algo``; never the trainers (the
``driver`` module, the evaluate entry point's driver, sits a layer higher, beside study and sweep)."""

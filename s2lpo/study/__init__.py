"""Study-level drivers (a study of labelled runs x seeds, an Optuna search, the family's pass@k): they compose
configs, call the trainer and the analysis layer, and return what they made; the entry points print."""

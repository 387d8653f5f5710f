"""Configuration: validation of the resolved Hydra config and run identity."""

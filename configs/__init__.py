"""Training configs (ml_collections). `default.py` is the base every other config overrides."""

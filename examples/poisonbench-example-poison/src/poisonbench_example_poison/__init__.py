"""poisonbench-example-poison: a template for third-party poison plugins."""

__version__ = "0.1.0"

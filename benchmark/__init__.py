"""poisonbench: a benchmark harness that ranks data poisons by the victim's peak test accuracy."""

__version__ = "0.1.0"

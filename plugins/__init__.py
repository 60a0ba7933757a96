"""Built-in poisonbench plugins, one module per family; each is listed in pyproject's entry points."""

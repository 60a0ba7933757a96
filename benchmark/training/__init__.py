"""Training one model on one training set: the trainer, its augmentation, checkpoints, device settings.

``trainer.train_victim`` is the project's only training loop: victims and crafting surrogates both go
through it, each with its own recipe (``suite.config.TrainConfig``).
"""

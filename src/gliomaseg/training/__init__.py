"""Training with Lightning: one ``train(TrainConfig)`` call per run folder (``training.run``)."""

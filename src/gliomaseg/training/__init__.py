"""Training with Lightning: one ``train(TrainConfig)`` call per run folder (``training.run``); what a run folder
recorded (its CSV logs, the epoch of ``best.ckpt``) is read without Lightning by ``training.records``."""

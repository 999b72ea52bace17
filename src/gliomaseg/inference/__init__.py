"""Running a model: the backends (PyTorch, ONNX Runtime), test-time augmentation, post-processing, predict's files."""

"""Inference: predictors (PyTorch checkpoint or ONNX Runtime), TTA, post-processing, the predict pipeline.

Only ``predictor.load_checkpoint`` imports torch; the ONNX path (``runtime``) and the pipeline do not.
"""

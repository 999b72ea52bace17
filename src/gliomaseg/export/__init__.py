"""Models out of the training world: ONNX export, its check against PyTorch, int8 and fp16 variants."""

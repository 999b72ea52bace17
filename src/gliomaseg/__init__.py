"""gliomaseg: lower-grade glioma segmentation in brain MRI with segmentation_models_pytorch.

The package root imports nothing heavy, so the torch-free ONNX runtime path stays torch-free.
"""

__version__ = "0.1.0"

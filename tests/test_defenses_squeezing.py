"""Preprocess defenses on tiny data: PIL-exact JPEG/grayscale/median, bit-depth levels, blur identity."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from poisonbench.api import DefenseContext, Split
from poisonbench.plugins.defenses import ops
from poisonbench.plugins.defenses.squeezing import BitDepth, GaussianBlur, Grayscale, Jpeg, Median


def _images(n=6, h=32, w=32, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(n, c, h // 4, w // 4, generator=g) * 255, size=(h, w),
                                             mode="bilinear", align_corners=False)
    noisy = smooth + torch.randn(n, c, h, w, generator=g) * 20  # natural-ish: edges plus texture
    return noisy.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _ctx(images):
    return DefenseContext(seed=0, num_classes=2, image_shape=tuple(images.shape[1:]))


def _pil(image: torch.Tensor) -> Image.Image:
    array = image.numpy()
    return Image.fromarray(array[..., 0], "L") if array.shape[-1] == 1 else Image.fromarray(array, "RGB")


def _pil_jpeg(image: torch.Tensor, quality: int) -> tuple[bytes, np.ndarray]:
    buffer = io.BytesIO()
    _pil(image).save(buffer, "JPEG", quality=quality)
    decoded = np.array(Image.open(io.BytesIO(buffer.getvalue())))
    return buffer.getvalue(), decoded.reshape(image.shape)


@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 28, 1), (17, 23, 3)])
@pytest.mark.parametrize("quality", [10, 30, 50])
def test_jpeg_is_byte_identical_to_pil_round_trip(shape, quality):
    from torchvision.io import encode_jpeg

    images = _images(4, *shape)
    out = Jpeg(Jpeg.Params(quality=quality)).preprocess(Split(images, torch.zeros(4, dtype=torch.long)),
                                                        ctx=_ctx(images))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    for i in range(len(images)):
        pil_bytes, pil_pixels = _pil_jpeg(images[i], quality)
        ours = encode_jpeg(images[i].permute(2, 0, 1).contiguous(), quality=quality).numpy().tobytes()
        assert ours == pil_bytes, f"encoded bytes differ for image {i}"
        assert np.array_equal(out[i].numpy(), pil_pixels), f"decoded pixels differ for image {i}"
    assert not torch.equal(out, images)  # it does change the images


def test_jpeg_worker_processes_and_chunks_do_not_change_the_result(monkeypatch):
    images = _images(9, 16, 16, 3)
    one = ops.jpeg(images, quality=10, threads=1)
    monkeypatch.setattr(ops, "JPEG_CHUNK", 2)
    assert torch.equal(ops.jpeg(images, quality=10, threads=3), one)


def test_grayscale_equals_pil_convert_l_with_equal_channels():
    images = _images(5)
    out = Grayscale().preprocess(Split(images, torch.zeros(5, dtype=torch.long)), ctx=_ctx(images))
    assert torch.equal(out[..., 0], out[..., 1]) and torch.equal(out[..., 1], out[..., 2])
    for i in range(5):
        assert np.array_equal(out[i, ..., 0].numpy(), np.array(_pil(images[i]).convert("L")))


def test_grayscale_on_one_channel_is_the_identity_and_says_so():
    images = _images(3, 28, 28, 1)
    out = Grayscale().preprocess(Split(images, torch.zeros(3, dtype=torch.long)), ctx=_ctx(images))
    assert torch.equal(out, images)
    assert "1-channel" in Grayscale().identity_on(image_shape=(28, 28, 1))
    assert Grayscale().identity_on(image_shape=(32, 32, 3)) is None
    assert Grayscale(Grayscale.Params(apply_to_eval=True)).applies_to_eval and not Grayscale().applies_to_eval


@pytest.mark.parametrize("bits", [1, 2, 3, 8])
def test_bit_depth_keeps_at_most_2_to_the_bits_levels_and_is_idempotent(bits):
    images = _images(4)
    defense = BitDepth(BitDepth.Params(bits=bits))
    out = defense.preprocess(Split(images, torch.zeros(4, dtype=torch.long)), ctx=_ctx(images))
    assert len(torch.unique(out)) <= 2 ** bits and bool((out <= images).all())  # a floor
    assert torch.equal(ops.bit_depth(out, bits=bits), out)
    if bits == 2:
        assert set(torch.unique(out).tolist()) <= {0, 64, 128, 192}
    assert (defense.identity_on(image_shape=(32, 32, 3)) is not None) == (bits == 8)


@pytest.mark.parametrize("shape,k", [((32, 32, 3), 3), ((28, 28, 1), 3), ((17, 23, 3), 3), ((16, 16, 3), 5)])
def test_median_equals_pil_median_filter(shape, k):
    images = _images(3, *shape)
    out = Median(Median.Params(kernel_size=k)).preprocess(Split(images, torch.zeros(3, dtype=torch.long)),
                                                          ctx=_ctx(images))
    for i in range(3):
        expected = np.array(_pil(images[i]).filter(ImageFilter.MedianFilter(k))).reshape(shape)
        assert np.array_equal(out[i].numpy(), expected)
    assert Median(Median.Params(kernel_size=31)).check_data(image_shape=(28, 28, 1))


def test_gaussian_blur_default_is_the_identity_and_a_real_sigma_matches_torchvision():
    from torchvision.transforms.functional import gaussian_blur

    images = _images(3)
    split = Split(images, torch.zeros(3, dtype=torch.long))
    default = GaussianBlur()
    assert torch.equal(default.preprocess(split, ctx=_ctx(images)), images)
    assert "no effect" in default.identity_on(image_shape=(32, 32, 3))
    blur = GaussianBlur(GaussianBlur.Params(kernel_size=3, sigma=1.0))
    assert blur.identity_on(image_shape=(32, 32, 3)) is None
    out = blur.preprocess(split, ctx=_ctx(images))
    for i in range(3):
        expected = gaussian_blur(images[i].permute(2, 0, 1), [3, 3], [1.0, 1.0]).permute(1, 2, 0)
        assert int((out[i].int() - expected.int()).abs().max()) <= 1  # float order of the two convs
    assert not torch.equal(out, images)
    assert ops.blur_is_identity(3, 0.25) and not ops.blur_is_identity(3, 0.3)

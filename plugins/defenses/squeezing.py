"""Preprocess defenses that squeeze the training images once: JPEG, grayscale, bit depth, median, blur.

All act on the whole uint8 training set before training (deterministic; cached by the harness
like an artifact), in the fixed order bit depth → grayscale → JPEG → blur → median (APBench's
order; orthogonal projection, when stacked, runs first). Test and validation images stay untouched
unless ``grayscale``'s ``apply_to_eval`` is true. The torch code is in ``ops.py``.

Threat model: a victim who may transform its own training data, knowing nothing of the poison.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from poisonbench.api import Defense, Paper

ISS = Paper(title="Image Shortcut Squeezing: Countering Perturbative Availability Poisons with Compression",
            venue="ICML", year=2023, url="https://arxiv.org/abs/2301.13838", authors="Liu et al.")
FEATURE_SQUEEZING = Paper(title="Feature Squeezing: Detecting Adversarial Examples in Deep Neural Networks",
                          venue="NDSS", year=2018, url="https://arxiv.org/abs/1704.01155", authors="Xu et al.")
APBENCH = Paper(title="APBench: A Unified Benchmark for Availability Poisoning Attacks and Defenses",
                venue="arXiv", year=2023, url="https://arxiv.org/abs/2308.03258", authors="Qin et al.")


class _Squeeze(Defense):
    """A preprocess defense of this module: ``preprocess`` runs ``ops.<op>`` on the uint8 training
    images with every field of the params as a keyword (Grayscale, whose param is not an op's, has
    its own)."""

    stage = "preprocess"
    op: ClassVar[str] = ""  # function of plugins/defenses/ops.py

    def preprocess(self, train, *, ctx):
        from poisonbench.plugins.defenses import ops

        return getattr(ops, self.op)(train.images, **dataclasses.asdict(self.params))


@dataclass(frozen=True)
class JpegParams:
    quality: int = 10  # libjpeg quality, 1-95 (ISS: 10; presets jpeg10/jpeg30/jpeg50)

    def __post_init__(self):
        if not 1 <= self.quality <= 95:
            raise ValueError(f"quality must be in 1..95, got {self.quality}")


class Jpeg(_Squeeze):
    """ISS JPEG compression: every training image round-tripped through JPEG at ``quality``.

    Byte-identical to PIL's ``Image.save(quality=q)`` + ``Image.open`` per image (libjpeg defaults:
    4:2:0 chroma, ISLOW DCT, IJG tables), batched through torchvision's codec. 1-channel images are
    coded as greyscale JPEGs (no chroma stage), so JPEG-q is milder on them than on RGB.
    """

    name = "jpeg"
    rank = 40
    Params = JpegParams
    paper = ISS
    op = "jpeg"


@dataclass(frozen=True)
class GrayscaleParams:
    apply_to_eval: bool = False  # also convert test and validation images (ISS --ISS_both_train_test)


class Grayscale(_Squeeze):
    """ISS grayscale: PIL ``convert("L")`` (ITU-R 601 luma, fixed point, rounded) copied to 3 channels.

    On 1-channel images (Fashion-MNIST) it is the identity: ``validate`` says so and the cell shares
    the undefended training.
    """

    name = "grayscale"
    rank = 30
    Params = GrayscaleParams
    paper = ISS

    @property
    def applies_to_eval(self) -> bool:
        return bool(self.params.apply_to_eval)

    def identity_on(self, *, image_shape):
        return "1-channel images are already grayscale" if image_shape[2] == 1 else None

    def preprocess(self, train, *, ctx):
        from poisonbench.plugins.defenses import ops

        return train.images.clone() if train.images.shape[-1] != 3 else ops.grayscale(train.images)


@dataclass(frozen=True)
class BitDepthParams:
    bits: int = 2  # bits kept per channel, 1-8 (8 = identity); 2 gives the levels {0, 64, 128, 192}

    def __post_init__(self):
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be in 1..8, got {self.bits}")


class BitDepth(_Squeeze):
    """Bit-depth reduction (APBench ``bdr``): ``x & mask`` keeps the top ``bits`` bits (a floor)."""

    name = "bit_depth"
    rank = 20
    Params = BitDepthParams
    paper = FEATURE_SQUEEZING
    op = "bit_depth"

    def identity_on(self, *, image_shape):
        return "8 bits keep every uint8 value" if self.params.bits == 8 else None


@dataclass(frozen=True)
class KernelParams:
    kernel_size: int = 3  # odd window side, pixels

    def __post_init__(self):
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")


class _WindowFilter(_Squeeze):
    """A k×k window filter per channel (median, blur); its ``Params`` inherit ``KernelParams``."""

    def check_data(self, *, image_shape):
        k, side = self.params.kernel_size, min(image_shape[:2])
        return [("kernel_size", f"kernel_size {k} is larger than the {side}-pixel image side")] if k > side else []


class Median(_WindowFilter):
    """k×k median filter per channel with replicate borders (= PIL ``MedianFilter(k)``), ISS's lowpass."""

    name = "median"
    rank = 60
    Params = KernelParams
    paper = FEATURE_SQUEEZING
    op = "median"

    def identity_on(self, *, image_shape):
        return "a 1×1 median keeps every pixel" if self.params.kernel_size == 1 else None


@dataclass(frozen=True)
class BlurParams(KernelParams):
    sigma: float = 0.1  # pixels; APBench's 0.1 leaves uint8 images unchanged (0.5-1.0 blur at 32 px)

    def __post_init__(self):
        super().__post_init__()
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")


class GaussianBlur(_WindowFilter):
    """Gaussian blur as APBench/ISS run it (torchvision ``GaussianBlur(3, 0.1)``, reflect borders).

    The default is APBench-faithful and a no-op: the off-centre taps weigh e^-50, so every uint8
    pixel rounds back to itself and the APBench "Gaussian" column is a second undefended run.
    ``validate`` notes it (exactly: when 255·(1 − centre weight²) < 0.5); set ``sigma`` to blur.
    """

    name = "gaussian_blur"
    rank = 50
    Params = BlurParams
    paper = APBENCH
    op = "gaussian_blur"

    def identity_on(self, *, image_shape):
        from poisonbench.plugins.defenses import ops

        if ops.blur_is_identity(self.params.kernel_size, self.params.sigma):
            return f"sigma {self.params.sigma:g} moves no uint8 value (blur has no effect on uint8 images)"
        return None

"""Network architectures (no training logic): SRResNet generator, discriminator, VGG19 features."""

from pipeline.archs.discriminator import Discriminator
from pipeline.archs.srresnet import SRResNet, to_uint8
from pipeline.archs.vgg import VGGFeatures, VGGWeightsMissing

__all__ = ["Discriminator", "SRResNet", "VGGFeatures", "VGGWeightsMissing", "to_uint8"]

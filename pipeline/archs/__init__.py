"""Network architectures (no training logic): SRResNet generator, discriminator, VGG19 features."""

from pipeline.archs.discriminator import Discriminator
from pipeline.archs.srresnet import SRResNet
from pipeline.archs.vgg import VGGFeatures, VGGWeightsMissing

__all__ = ["Discriminator", "SRResNet", "VGGFeatures", "VGGWeightsMissing"]

"""Backbones: the one small interface every base model offers to the guidance methods."""

from srsoup.backbones.base import Backbone, StepDistribution

__all__ = ["Backbone", "StepDistribution"]

"""srsoup: Sample Reward Soups, training-free multi-reward guidance for text-to-image diffusion."""

__version__ = "0.1.0"

"""Test helpers shipped with the package: tiny hub-layout checkpoints and the embedded model's evaluation."""

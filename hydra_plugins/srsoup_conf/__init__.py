"""Hydra search-path plugin of srsoup: the user's own configs ahead of the packaged ones."""

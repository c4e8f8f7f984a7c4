"""Guidance methods, chosen by ``guidance.method``: none, single, weighted_sum, srsoup, best_of_n."""

from __future__ import annotations

from srsoup.guidance.base import Guidance, Plan
from srsoup.guidance.best_of_n import BestOfN
from srsoup.guidance.none import NoGuidance
from srsoup.guidance.single import Single
from srsoup.guidance.srsoup import SRSoup
from srsoup.guidance.weighted_sum import WeightedSum

METHODS: dict[str, type[Guidance]] = {
    "none": NoGuidance,
    "single": Single,
    "weighted_sum": WeightedSum,
    "srsoup": SRSoup,
    "best_of_n": BestOfN,
}

__all__ = ["METHODS", "BestOfN", "Guidance", "Plan", "NoGuidance", "Single", "SRSoup", "WeightedSum"]

"""What a running service's `/metrics` counts, for tests that check which path a request took."""

from __future__ import annotations

from collections import Counter

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["scraped"]


def scraped(url: str, sample: str, *, by: str, **labels: str) -> Counter[str]:
    """The values of the samples named `sample` (`skystore_bodies_total`, say) on the service at
    `url` whose labels include `labels`, keyed by their label `by`; an unseen key counts 0."""
    values: Counter[str] = Counter()
    text = httpx.get(f"{url.rstrip('/')}/metrics").text
    for family in text_string_to_metric_families(text):
        for point in family.samples:
            if point.name == sample and labels.items() <= point.labels.items():
                values[point.labels[by]] += point.value
    return values

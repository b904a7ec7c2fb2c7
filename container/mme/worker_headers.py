"""The headers that the gateway and its workers add for each other; clients never see them."""

from __future__ import annotations

THREADS = "X-Mme-Threads"  # request: the threads the CPU budget granted it
OWN_THREADS = "X-Mme-Own-Threads"  # answer: the threads the model's code set for itself
ORIGINAL_CONTENT_TYPE = "X-Mme-Content-Type"  # request: a form type, hidden from MMS


def header(properties: dict[str, str] | None, name: str) -> str | None:
    """The value of ``name`` among MMS's request properties (whatever the case)."""
    properties = properties or {}
    value = properties.get(name)
    return value if value is not None else properties.get(name.lower())

"""How a batch of requests travels from the gateway to a worker, and its answers back.

MMS moves one request at a time, and SageMaker's LOAD cannot set MMS's own batching, so
the gateway packs the requests that wait for one model into one MMS request, and the
worker answers them in one MMS answer. Both are one body:

    4-byte big-endian length of the index | the index, JSON | the bodies, one after another

A request's index entry is ``{"headers": [[name, value], ...], "length": n}``; an answer's
is ``{"status": code, "headers": [[name, value], ...], "length": n}``. Header names and
values are latin-1 text, as on the wire. Only the standard library: both sides import it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

CONTENT_TYPE = "application/x-mme-batch"
BATCH_HEADER = "X-Mme-Batch"  # on the MMS request: how many requests it carries
_LENGTH = struct.Struct(">I")

Headers = list[tuple[str, str]]


class BatchWireError(ValueError):
    """A body that is not a batch of this format."""


@dataclass
class Part:
    """One request or answer of a batch."""

    body: bytes
    headers: Headers = field(default_factory=list)
    status: int = 200

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        lower = name.lower()
        return next((value for key, value in self.headers if key.lower() == lower), None)


def encode(parts: list[Part], with_status: bool) -> bytes:
    """``parts`` as one body (``with_status``: answers, which carry their status)."""
    index = [
        {
            "headers": [list(h) for h in p.headers],
            "length": len(p.body),
            **({"status": p.status} if with_status else {}),
        }
        for p in parts
    ]
    head = json.dumps(index).encode("latin-1")
    return b"".join([_LENGTH.pack(len(head)), head, *(p.body for p in parts)])


def decode(body: bytes) -> list[Part]:
    """The parts of a batch body; BatchWireError if it is not one."""
    try:
        (length,) = _LENGTH.unpack_from(body)
        index = json.loads(body[_LENGTH.size : _LENGTH.size + length].decode("latin-1"))
        offset = _LENGTH.size + length
        parts = []
        for entry in index:
            size = int(entry["length"])
            parts.append(
                Part(
                    body[offset : offset + size],
                    [(str(k), str(v)) for k, v in entry["headers"]],
                    int(entry.get("status", 200)),
                )
            )
            offset += size
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise BatchWireError(f"not a batch body: {exc}") from exc
    if offset != len(body):
        raise BatchWireError("a batch body whose parts do not add up to its length")
    return parts

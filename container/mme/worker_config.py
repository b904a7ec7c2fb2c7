"""What `mme serve` tells the workers it starts about itself, through MMS's environment.

The user's configuration is read once, by `mme serve` (:mod:`mme.settings`). The workers
(started by MMS, or forked by the zygote) get this small config instead, written by
the server and read back here, side by side, so that the two cannot drift apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

ENV_VAR = "MME_WORKER_CONFIG"


@dataclass(frozen=True)
class WorkerConfig:
    """A worker's view of its server; the defaults are a worker outside `mme serve`."""

    server_temp_dir: str = ""  # "" outside `mme serve`: no records, no markers
    response_timeout_s: int = 60
    max_payload_bytes: int = 6 * 1024 * 1024
    num_threads: int = 1
    requirements_dir: str = "/opt/ml/model-deps"
    requirements_timeout_s: int = 55
    max_batch_size: int = 8
    max_batch_delay_ms: int = 0
    share_model: bool = False  # prefork: a model's later connections go to its live worker

    def to_env(self) -> dict[str, str]:
        """The environment variable that carries this config to the workers."""
        return {ENV_VAR: json.dumps(asdict(self))}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerConfig:
        """The config that the server put in ``env`` (default: this process's environment)."""
        raw = (os.environ if env is None else env).get(ENV_VAR)
        if not raw:
            return cls()
        known = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in json.loads(raw).items() if key in known})

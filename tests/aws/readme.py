"""The deploy guide's "Deploy to SageMaker" section (docs/deploying.md), which the deploy
tests hold to its word."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "docs" / "deploying.md"
SECTION = "## Deploy to SageMaker"


def deploy_section() -> str:
    """The section's text, up to the next second-level heading."""
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else len(text)]


def deployer_policy(bucket: str) -> dict[str, Any]:
    """The IAM policy for the identity that runs the commands, aimed at ``bucket``."""
    iam = deploy_section().split("### IAM permissions", 1)[1]
    block = re.search(r"```json\n(.*?)```", iam, re.DOTALL)
    assert block is not None, "no JSON policy under 'IAM permissions'"
    return dict(json.loads(block.group(1).replace("my-bucket", bucket)))

"""scripts/mme.sh as a shell user runs it (`scripts/mme.sh deploy ...`): venv not on PATH."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mme.aws.session import Client
from tests.aws.aws_cli import CLI_TIMEOUT_S, deploy_args, resource_names, text

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _script(*args: str, **env_vars: str) -> subprocess.CompletedProcess[bytes]:
    # A login shell's PATH: the project's venv is not on it, and neither is `mme`.
    env = {**os.environ, "PATH": "/usr/local/bin:/usr/bin:/bin", **env_vars}
    return subprocess.run(
        ["bash", str(SCRIPTS / "mme.sh"), *args],
        capture_output=True,
        env=env,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def test_the_script_deploys_and_tears_down_without_the_venv_on_path(
    moto_url: str, sagemaker: Client, endpoint_name: str, bucket: str
) -> None:
    deployed = _script(*deploy_args(endpoint_name, moto_url, f"s3://{bucket}/"))
    made = resource_names(sagemaker, endpoint_name)
    removed = _script("teardown", endpoint_name, "--endpoint-url", moto_url,
                      "--poll-interval", "0")  # fmt: skip

    assert deployed.returncode == 0, text(deployed.stderr)
    assert len(made[0]) == 1 and len(made[1]) == 1
    assert removed.returncode == 0, text(removed.stderr)
    assert resource_names(sagemaker, endpoint_name) == ([], [])


def test_the_script_says_how_to_get_mme_when_there_is_none(tmp_path: Path) -> None:
    missing = tmp_path / "no-venv" / "bin" / "mme"

    result = _script("teardown", "--help", MME=str(missing))

    assert result.returncode == 127
    assert text(result.stderr) == (
        f"mme not found (not at {missing}, not on PATH): run `make setup` in the checkout, "
        "or set MME\n"
    )

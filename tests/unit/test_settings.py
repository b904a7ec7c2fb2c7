import logging

import pytest

from mme.settings import MIB, Settings, SettingsError
from mme.worker_config import WorkerConfig


def test_defaults_follow_sagemaker() -> None:
    settings = Settings.from_env({"OMP_NUM_THREADS": "2"})
    assert settings.port == 8080
    assert settings.bind_address == "127.0.0.1"  # natively; the image sets 0.0.0.0
    assert settings.workers_per_model == 1
    assert settings.response_timeout_s == 60
    assert settings.max_payload_bytes == 6 * MIB
    assert settings.job_queue_size == 100
    assert settings.log_level == logging.INFO
    assert settings.models_dir == "/opt/ml/models"
    assert settings.program_module == "inference"
    assert settings.num_threads == 2


def test_values_are_read_from_their_variables() -> None:
    settings = Settings.from_env(
        {
            "SAGEMAKER_BIND_TO_PORT": "9001",
            "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "45",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20",
            "MME_JOB_QUEUE_SIZE": "7",
            "SAGEMAKER_CONTAINER_LOG_LEVEL": "debug",
            "SAGEMAKER_BASE_DIR": "/srv/ml",
            "SAGEMAKER_PROGRAM": "serve_me.py",
            "MME_NUM_THREADS": "4",
            "SAGEMAKER_HANDLER": "my_handler:handle",
        }
    )
    assert (settings.port, settings.workers_per_model, settings.response_timeout_s) == (9001, 3, 45)
    assert settings.max_payload_bytes == 20 * MIB
    assert settings.job_queue_size == 7
    assert settings.log_level == logging.DEBUG
    assert settings.models_dir == "/srv/ml/models"
    assert settings.program_module == "serve_me"
    assert settings.num_threads == 4
    assert settings.handler_service == "my_handler:handle"


def test_model_server_timeout_is_read_as_seconds_not_minutes() -> None:
    assert Settings.from_env({"SAGEMAKER_MODEL_SERVER_TIMEOUT": "90"}).response_timeout_s == 90
    both = {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "90", "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "30"}
    assert Settings.from_env(both).response_timeout_s == 30


def test_numeric_log_level_as_the_sdk_sets_it() -> None:
    assert Settings.from_env({"SAGEMAKER_CONTAINER_LOG_LEVEL": "30"}).log_level == logging.WARNING


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SAGEMAKER_BIND_TO_PORT", "65536", "1..65535"),
        ("MME_BIND_ADDRESS", "localhost:80", "not an IP address"),
        ("SAGEMAKER_BIND_TO_PORT", "http", "not an integer"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "0", "out of range"),
        ("SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS", "-1", "out of range"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "6.5", "not an integer"),
        ("SAGEMAKER_CONTAINER_LOG_LEVEL", "chatty", "not a log level"),
        ("SAGEMAKER_PROGRAM", "code/inference.py", "must name a module"),
        ("MME_NUM_THREADS", "0", "out of range"),
        ("MME_WORKERS_SHARE_MODEL", "sometimes", "must be on or off"),
    ],
)
def test_bad_values_fail_fast_naming_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({name: value})
    assert name in str(error.value)
    assert says in str(error.value)


def test_worker_environment_isolates_the_temp_folder_and_sets_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings.from_env({"MME_NUM_THREADS": "2"})
    monkeypatch.setenv("KEEP_ME", "yes")  # the environment passes on to MMS and its workers
    env = settings.worker_environment("mme.handler_service:handle", "/tmp/mme-x")
    assert env["TEMP"] == env["TMPDIR"] == "/tmp/mme-x"
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["SAGEMAKER_MULTI_MODEL"] == "true"
    assert env["SAGEMAKER_HANDLER"] == "mme.handler_service:handle"
    assert env["KEEP_ME"] == "yes"
    worker = WorkerConfig.from_env(env)  # what the workers read: the server's, not the user's
    assert (worker.server_temp_dir, worker.num_threads) == ("/tmp/mme-x", 2)


@pytest.mark.parametrize(
    ("env", "shares"),
    [
        ({}, True),
        ({"MME_WORKERS_SHARE_MODEL": "off"}, False),
        ({"MME_WORKERS_SHARE_MODEL": "ON"}, True),
        ({"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}, False),  # nobody to share with
        ({"MME_WORKER_MODE": "stock"}, False),  # MMS's own workers: a process each
        ({"SAGEMAKER_HANDLER": "my_handler:handle"}, False),  # written for a process each
    ],
)
def test_a_models_workers_share_it_in_prefork_mode_unless_told_not_to(
    env: dict[str, str], shares: bool
) -> None:
    settings = Settings.from_env({"SAGEMAKER_MODEL_SERVER_WORKERS": "2", **env})
    assert settings.shares_model is shares
    told = settings.worker_config("/tmp/mme-x").to_env()
    assert WorkerConfig.from_env(told).share_model is shares


def test_a_worker_outside_mme_serve_gets_the_defaults() -> None:
    assert WorkerConfig.from_env({}) == WorkerConfig()


def test_requirements_folder_and_time_limit_defaults() -> None:
    settings = Settings.from_env({"SAGEMAKER_BASE_DIR": "/srv/ml"})
    assert settings.requirements_dir == "/srv/ml/model-deps"
    assert settings.requirements_timeout_s == 55  # inside the 60 s that MMS allows a LOAD
    short = Settings.from_env({"SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "3"})
    assert short.requirements_timeout_s == 1


def test_requirements_settings_are_read_from_their_variables() -> None:
    settings = Settings.from_env(
        {"MME_REQUIREMENTS_DIR": "/cache/deps", "MME_REQUIREMENTS_TIMEOUT_SECONDS": "30"}
    )
    assert (settings.requirements_dir, settings.requirements_timeout_s) == ("/cache/deps", 30)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"MME_REQUIREMENTS_DIR": "deps"}, "must be an absolute path"),
        ({"MME_REQUIREMENTS_TIMEOUT_SECONDS": "0"}, "out of range"),
        ({"MME_REQUIREMENTS_TIMEOUT_SECONDS": "soon"}, "not an integer"),
        (
            {"MME_REQUIREMENTS_TIMEOUT_SECONDS": "60"},
            "must be less than SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS=60",
        ),
        (
            {"MME_REQUIREMENTS_TIMEOUT_SECONDS": "90", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "90"},
            "must be less than SAGEMAKER_MODEL_SERVER_TIMEOUT=90",
        ),
    ],
)
def test_bad_requirements_settings_fail_fast(env: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        Settings.from_env(env)


def test_worker_mode_is_prefork_unless_stock_is_asked_for() -> None:
    assert Settings.from_env({}).worker_mode == "prefork"
    assert Settings.from_env({"MME_WORKER_MODE": " Stock "}).worker_mode == "stock"
    with pytest.raises(SettingsError, match="MME_WORKER_MODE='fast' is not a worker mode"):
        Settings.from_env({"MME_WORKER_MODE": "fast"})


def test_metrics_are_on_at_metrics_unless_turned_off() -> None:
    assert Settings.from_env({}).metrics_path == "/metrics"
    assert Settings.from_env({"MME_METRICS_PATH": "/prom"}).metrics_path == "/prom"
    assert Settings.from_env({"MME_METRICS": "off", "MME_METRICS_PATH": "/prom"}).metrics_path == ""


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"MME_METRICS": "maybe"}, "on or off"),
        ({"MME_METRICS_PATH": "metrics"}, "a path such as /metrics"),
        ({"MME_METRICS_PATH": "/ping"}, "a path of the container API"),
        ({"MME_METRICS_PATH": "/models/metrics"}, "a path of the container API"),
    ],
)
def test_bad_metrics_settings_fail_fast(env: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        Settings.from_env(env)

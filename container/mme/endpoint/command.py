"""`mme endpoint`: the command line, startup checks and supervision of the local endpoint."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from mme.endpoint.app import EndpointApp, EndpointConfig, EndpointHTTPServer
from mme.endpoint.artifacts import ArtifactStore, open_store
from mme.endpoint.container_api import ContainerClient, ContainerTimeoutError
from mme.endpoint.disk_cache import DiskCache
from mme.endpoint.errors import EndpointError
from mme.endpoint.extraction import ExtractionLimits
from mme.endpoint.loader import ModelLoader
from mme.endpoint.metrics import Metrics
from mme.endpoint.registry import ModelRegistry, RegistryConfig
from mme.packaging import EXAMPLES
from mme.ports import free_port
from mme.sagemaker_contract import MODEL_CACHE_SETTINGS, is_valid_name
from mme.settings import MIB

if TYPE_CHECKING:
    from mme.server import ModelServer

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = ".work/endpoint"
DEFAULT_ENDPOINT_NAME = "local-mme"
WATCH_INTERVAL_S = 1.0


class StartupError(RuntimeError):
    """The container did not become ready."""


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``endpoint`` subcommand to the ``mme`` command."""
    parser = commands.add_parser(
        "endpoint",
        help="run a local SageMaker multi-model endpoint (boto3 sagemaker-runtime works on it)",
        description="Play SageMaker's part in front of the container: answer InvokeEndpoint "
        "calls, fetch each TargetModel from the ModelDataUrl prefix (S3 or a local folder) on "
        "its first call, extract it safely, LOAD it into the container, and evict the least "
        "recently used models when memory runs out. Without --container-url it starts its own "
        "container server (`mme serve`) on a free port.",
    )
    _add_source_options(parser)
    _add_server_options(parser)
    _add_cache_options(parser)
    parser.set_defaults(run=run_endpoint)


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-data-url",
        required=True,
        metavar="URL",
        help="the ModelDataUrl prefix: s3://bucket/prefix/ or a local folder; "
        "the archive of a call is this prefix + its TargetModel",
    )
    parser.add_argument(
        "--s3-endpoint-url",
        metavar="URL",
        default=None,
        help="an S3-compatible store to read s3:// URLs from (MinIO, moto, ...);"
        " credentials come from the usual AWS chain",
    )
    parser.add_argument(
        "--region", default=None, help="AWS region of the S3 client (default: the AWS chain's)"
    )


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint-name",
        default=DEFAULT_ENDPOINT_NAME,
        metavar="NAME",
        help=f"the EndpointName the endpoint answers to (default "
        f"{DEFAULT_ENDPOINT_NAME}); POST /invocations needs none",
    )
    parser.add_argument(
        "--variant-name",
        default="AllTraffic",
        metavar="NAME",
        help="the production variant reported in x-Amzn-Invoked-Production-"
        "Variant (default AllTraffic)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8080,
        help="port to listen on (default 8080, where the SageMaker SDK's local "
        "mode sends /invocations)",
    )
    parser.add_argument(
        "--container-url",
        metavar="URL",
        default=None,
        help="front a running container (for example http://127.0.0.1:8080 "
        "from `make run`) instead of starting one",
    )
    parser.add_argument(
        "--container-models-dir",
        metavar="DIR",
        default="/opt/ml/models",
        help="with --container-url: where the container sees --cache-dir "
        "(default /opt/ml/models, the image's mount point)",
    )
    parser.add_argument(
        "--invocation-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long a call waits for its model's download and load before "
        "it gets ModelNotReadyException (the load goes on), and for the "
        "container's answer (default 60)",
    )
    parser.add_argument(
        "--load-timeout",
        type=float,
        default=360.0,
        metavar="SECONDS",
        help="how long a LOAD may take in the background (default 360)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=240.0,
        metavar="SECONDS",
        help="how long to wait for the container's /ping and GET /models (default 240)",
    )


def _add_cache_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        default=DEFAULT_CACHE_DIR,
        metavar="DIR",
        help=f"where archives are extracted, as <DIR>/<model id>/model "
        f"(default ./{DEFAULT_CACHE_DIR}); with --container-url it must be the "
        "folder mounted at --container-models-dir",
    )
    parser.add_argument(
        "--max-loaded-models",
        type=int,
        default=0,
        metavar="N",
        help="unload the least recently used model before loading one more "
        "than N (default 0: only when the container answers 507)",
    )
    parser.add_argument(
        "--cache-max-mb",
        type=int,
        default=10240,
        metavar="MB",
        help="disk budget for extracted models that are not loaded; the least "
        "recently used are deleted first (default 10240)",
    )
    parser.add_argument(
        "--max-model-mb",
        type=int,
        default=16384,
        metavar="MB",
        help="largest archive, and largest extracted model, accepted "
        "(default 16384); bigger ones are refused with ValidationError",
    )
    parser.add_argument(
        "--model-cache-setting",
        choices=MODEL_CACHE_SETTINGS,
        default="Enabled",
        help="MultiModelConfig.ModelCacheSetting: Disabled unloads and deletes "
        "each model right after its call (default Enabled)",
    )


def _check_args(args: argparse.Namespace) -> None:
    if not is_valid_name(args.endpoint_name):
        # The endpoint would refuse every call made to it by this name.
        raise ValueError(
            f"--endpoint-name {args.endpoint_name!r} is not a name SageMaker "
            "takes: up to 63 letters, digits and hyphens, no hyphen first or last"
        )
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is not a TCP port")
    for name in ("max_loaded_models", "cache_max_mb"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be 0 or more")
    for name in ("max_model_mb", "invocation_timeout", "load_timeout", "startup_timeout"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be more than 0")


def _wait_for_container(container: ContainerClient, timeout_s: float) -> None:
    """Like SageMaker: /ping must answer 200, and then GET /models must too."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status = container.ping()
            if status == 200:
                loaded = container.list_models()
                logger.info(
                    "container at %s is healthy; %d model(s) loaded",
                    container.base_url,
                    len(loaded),
                )
                return
            last = f"/ping answered {status}"
        except (EndpointError, ContainerTimeoutError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise StartupError(f"container at {container.base_url} not ready after {timeout_s:g} s: {last}")


def _registry(
    args: argparse.Namespace,
    store: ArtifactStore,
    container: ContainerClient,
    container_models_dir: str,
    metrics: Metrics,
) -> ModelRegistry:
    disk = DiskCache(
        Path(args.cache_dir).resolve(),
        budget_bytes=args.cache_max_mb * MIB,
        limits=ExtractionLimits(max_bytes=args.max_model_mb * MIB),
    )
    disk.remove_leftovers()
    config = RegistryConfig(
        max_loaded_models=args.max_loaded_models,
        load_wait_s=args.invocation_timeout,
        cache_enabled=args.model_cache_setting == "Enabled",
    )
    return ModelRegistry(
        store, disk, ModelLoader(container, container_models_dir, metrics), config, metrics
    )


def _hints(url: str, name: str, examples: list[str]) -> str:
    """A ready curl line and boto3 snippet for the first model found under the prefix."""
    target = examples[0] if examples else "model.tar.gz"
    # The examples that `mme package` builds take images; for any other model, JSON.
    image = target.removesuffix(".tar.gz") in EXAMPLES
    content_type = "application/x-image" if image else "application/json"
    data = "@image.jpg" if image else "@request.json"
    available = ", ".join(examples) if examples else "none found yet"
    return "\n".join(
        [
            f"Endpoint {name!r} is ready on {url} (models: {available})",
            "Try it with curl:",
            f"  curl -s {url}/endpoints/{name}/invocations "
            f"-H 'X-Amzn-SageMaker-Target-Model: {target}' -H 'Content-Type: {content_type}' "
            f"--data-binary {data}",
            "or with boto3:",
            "  import boto3",
            f"  rt = boto3.client('sagemaker-runtime', endpoint_url='{url}', "
            "region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='x')",
            f"  answer = rt.invoke_endpoint(EndpointName='{name}', TargetModel='{target}', "
            f"ContentType='{content_type}', Body=open('{data[1:]}', 'rb').read())",
            "  print(answer['Body'].read().decode())",
            f"Metrics: curl -s {url}/metrics",
        ]
    )


def _serve(httpd: EndpointHTTPServer, own_server: ModelServer | None) -> int:
    """Serve until SIGTERM/SIGINT (0) or until our container dies (1)."""
    outcome = {"code": 0}
    stop = threading.Event()

    def _shutdown(code: int) -> None:
        if not stop.is_set():
            outcome["code"] = code
            stop.set()
            # shutdown() blocks until serve_forever returns, so never on its own thread.
            threading.Thread(target=httpd.shutdown, daemon=True).start()

    def _on_signal(signo: int, _frame: FrameType | None) -> None:
        logger.info("got %s: stopping the endpoint", signal.Signals(signo).name)
        _shutdown(0)

    def _watch() -> None:
        while own_server and own_server.process and not stop.wait(WATCH_INTERVAL_S):
            if own_server.process.poll() is not None:
                logger.error("the container server exited with %s", own_server.process.returncode)
                _shutdown(1)

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    threading.Thread(target=_watch, daemon=True, name="container-watch").start()
    try:
        httpd.serve_forever(poll_interval=0.5)
    finally:
        stop.set()
        for signo, handler in previous.items():
            signal.signal(signo, handler)
    return outcome["code"]


def run_endpoint(args: argparse.Namespace) -> int:
    """The ``endpoint`` command: returns the exit status."""
    # Imported here: the toolkit is slow to import, which `mme --help` need not wait for.
    with warnings.catch_warnings():
        # sagemaker-inference imports pkg_resources, which setuptools (pinned <81 for it)
        # deprecates: nothing a user of the endpoint can act on.
        warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
        from mme.server import ModelServer, ServerStartError

    try:
        _check_args(args)
        store = open_store(args.model_data_url, args.s3_endpoint_url, args.region)
        httpd = EndpointHTTPServer((args.host, args.port))  # bound first: fail fast
    except (ValueError, OSError) as exc:
        print(f"mme endpoint: {exc}", file=sys.stderr)
        return 2
    own_server: ModelServer | None = None
    registry: ModelRegistry | None = None
    try:
        if args.container_url:
            container_url, models_dir = args.container_url, args.container_models_dir
        else:
            settings = dataclasses.replace(args.settings, port=free_port())
            own_server = ModelServer(settings)
            own_server.start()
            container_url = f"http://127.0.0.1:{settings.port}"
            models_dir = str(Path(args.cache_dir).resolve())
        container = ContainerClient(container_url, args.invocation_timeout, args.load_timeout)
        _wait_for_container(container, args.startup_timeout)
        region = args.region or "us-east-1"
        arn = (
            f"arn:aws:logs:{region}:000000000000:log-group:/aws/sagemaker/Endpoints/"
            f"{args.endpoint_name}"
        )
        metrics = Metrics(args.endpoint_name, args.variant_name)
        registry = _registry(args, store, container, models_dir, metrics)
        httpd.app = EndpointApp(
            EndpointConfig(args.endpoint_name, args.variant_name, arn), registry, container, metrics
        )
        shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
        url = f"http://{shown_host}:{httpd.server_address[1]}"
        print(_hints(url, args.endpoint_name, store.examples(3)), flush=True)
        return _serve(httpd, own_server)
    except (ServerStartError, StartupError, ValueError, OSError) as exc:
        logger.error("mme endpoint cannot start: %s", exc)
        return 1
    finally:
        httpd.server_close()
        if registry is not None:
            registry.close()
        if own_server is not None:
            own_server.stop()

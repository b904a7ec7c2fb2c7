"""The deploy subcommands of `mme`: models add|list, deploy, autoscale, invoke, teardown.

Each handler builds its clients from --region/--profile/--endpoint-url, calls one module,
and prints the result; every failure goes through `errors.explain` in `_guarded`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mme.aws import autoscaling, deployment, errors, invoke, model_store, teardown
from mme.aws.session import LOCAL_REGION, AwsTarget, quiet_aws_loggers
from mme.sagemaker_contract import MODEL_CACHE_SETTINGS

Handler = Callable[[argparse.Namespace], int]


def register(commands: argparse._SubParsersAction) -> None:
    """Add the deploy subcommands to the `mme` parser's subcommands."""
    common = _common_options()
    _add_models(commands, common)
    _add_deploy(commands, common)
    _add_autoscale(commands, common)
    _add_invoke(commands, common)
    _add_teardown(commands, common)


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("AWS")
    group.add_argument("--region", help="AWS region (default: AWS_REGION or the profile's)")
    group.add_argument("--profile", help="named profile from ~/.aws/config (default: AWS_PROFILE)")
    group.add_argument(
        "--endpoint-url",
        help="send the calls to this URL instead of AWS, e.g. an S3- or SageMaker-compatible "
        "service, or `mme endpoint` for invoke (default: AWS_ENDPOINT_URL, or "
        "AWS_ENDPOINT_URL_<SERVICE> such as AWS_ENDPOINT_URL_S3, when set)",
    )
    return common


def _guarded(handler: Handler) -> Handler:
    """Run ``handler``; turn any failure that `errors.explain` knows into a message."""

    def run(args: argparse.Namespace) -> int:
        quiet_aws_loggers()
        try:
            return handler(args)
        except Exception as exc:
            failure = errors.explain(exc)
            if failure is None:
                raise  # a bug: the traceback is the useful message
            print(f"mme {_command_name(args)}: error: {failure.message}", file=sys.stderr)
            return failure.exit_code

    return run


def _command_name(args: argparse.Namespace) -> str:
    """``deploy``, or ``models add`` for a command with an action."""
    action = getattr(args, f"{args.command}_command", None)
    return f"{args.command} {action}" if action else str(args.command)


def _target(args: argparse.Namespace) -> AwsTarget:
    return AwsTarget(region=args.region, profile=args.profile, endpoint_url=args.endpoint_url)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- models add | list


def _models_add(args: argparse.Namespace) -> int:
    prefix = model_store.S3Prefix.parse(args.prefix)
    uploads = model_store.plan_uploads([Path(p) for p in args.files], args.name)
    progress = None if args.no_progress else model_store.large_file_progress
    s3 = _target(args).client("s3")
    for url in model_store.upload_models(s3, prefix, uploads, args.overwrite, progress):
        print(f"uploaded {url}")
    return 0


def _models_list(args: argparse.Namespace) -> int:
    prefix = model_store.S3Prefix.parse(args.prefix)
    for model in model_store.list_models(_target(args).client("s3"), prefix):
        if args.long:
            print(f"{model.size:>12}  {model.last_modified}  {model.target_model}")
        else:
            print(model.target_model)
    return 0


def _add_models(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    models = commands.add_parser(
        "models",
        help="add model.tar.gz files to an endpoint's S3 prefix, or list them",
        description="Manage the models under a multi-model endpoint's S3 prefix. A model is "
        "invoked by its TargetModel: its key relative to the prefix.",
    )
    actions = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        parents=[common],
        help="upload model archives",
        description="Upload model.tar.gz files to PREFIX. The bucket must exist (create it "
        "with `aws s3 mb`, in the endpoint's region). An existing key is never replaced "
        "unless --overwrite is given: endpoints may keep serving a cached copy of the old "
        "model, so publish a new version under a new name. If an upload fails, the error "
        "names the file and the ones uploaded before it; boto3 aborts a failed multipart "
        "upload (s3:AbortMultipartUpload), so no parts are left behind.",
    )
    add.add_argument("prefix", metavar="PREFIX", help="the endpoint's s3://bucket/prefix/")
    add.add_argument("files", metavar="FILE", nargs="+", type=str, help="model.tar.gz files")
    add.add_argument(
        "--name",
        help="TargetModel for a single FILE, e.g. team-a/resnet-v2.tar.gz "
        "(default: the file's name)",
    )
    add.add_argument("--overwrite", action="store_true", help="replace existing keys")
    add.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add.set_defaults(run=_guarded(_models_add))
    listing = actions.add_parser(
        "list",
        parents=[common],
        help="list the models under a prefix",
        description="Print the TargetModel name of every object under PREFIX, one per line.",
    )
    listing.add_argument("prefix", metavar="PREFIX", help="the endpoint's s3://bucket/prefix/")
    listing.add_argument("--long", action="store_true", help="also print size and date")
    listing.set_defaults(run=_guarded(_models_list))


# ---- deploy


def _deploy(args: argparse.Namespace) -> int:
    spec = deployment.DeploySpec(
        endpoint_name=args.endpoint,
        image=args.image,
        model_data_url=args.model_data_url,
        role_arn=args.role,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        volume_size_gb=args.volume_size,
        startup_timeout_s=args.startup_timeout,
        environment=deployment.parse_environment(args.env),
        model_cache=args.model_cache,
        variant_name=args.variant_name,
        **_metrics_options(args),
    )
    spec.validate()  # before any client: a bad prefix needs no credentials to be refused
    result = deployment.deploy(
        _target(args).client("sagemaker"),
        spec,
        update=args.update,
        wait=not args.no_wait,
        timeout_s=args.wait_timeout,
        poll_s=args.poll_interval,
        report=_progress,
    )
    print(f"endpoint {result.endpoint_name}: {result.status} ({result.action})")
    print(f"  arn:             {result.endpoint_arn}")
    print(f"  endpoint config: {result.config_name}")
    print(f"  model:           {result.model_name} (MultiModel, {spec.model_data_url})")
    return 0


def _metrics_options(args: argparse.Namespace) -> dict[str, Any]:
    """The DeploySpec fields of --metrics-path, --metrics-frequency and --no-metrics."""
    if args.no_metrics:
        if args.metrics_path is not None or args.metrics_frequency is not None:
            raise errors.UsageError(
                "--no-metrics cannot go with --metrics-path or --metrics-frequency"
            )
        return {"metrics_path": None}
    chosen = {"metrics_path": args.metrics_path, "metrics_frequency_s": args.metrics_frequency}
    return {key: value for key, value in chosen.items() if value is not None}


def _add_deploy(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "deploy",
        parents=[common],
        help="create a multi-model endpoint on SageMaker and wait until it is InService",
        description="CreateModel (Mode=MultiModel, ModelDataUrl=the prefix), "
        "CreateEndpointConfig and CreateEndpoint, then wait for InService; all three are "
        "tagged mme:endpoint=ENDPOINT. Values SageMaker would refuse are refused first, "
        "among them an image not in ECR of the endpoint's region or without a tag or "
        "digest. A run that fails before SageMaker takes the endpoint call removes what it "
        "created; one that fails later says what is left and how to remove it. Running it "
        "again with the same settings changes nothing but deletes the configs and models "
        "deploy made that the endpoint no longer uses; other settings need --update.",
    )
    parser.add_argument("endpoint", metavar="ENDPOINT", help="endpoint name")
    parser.add_argument(
        "--image",
        required=True,
        help="the container image in ECR of the endpoint's region, by tag or digest: "
        "ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG",
    )
    parser.add_argument(
        "--model-data-url", required=True, help="the S3 prefix of the models, s3://bucket/prefix/"
    )
    parser.add_argument("--role", required=True, help="SageMaker execution role ARN")
    parser.add_argument("--instance-type", default="ml.m5.xlarge", help="default: %(default)s")
    parser.add_argument("--instance-count", type=int, default=1, help="default: %(default)s")
    parser.add_argument("--volume-size", type=int, help="ML storage volume in GB per instance")
    parser.add_argument(
        "--startup-timeout",
        type=int,
        metavar="SECONDS",
        help="ContainerStartupHealthCheckTimeoutInSeconds (60-3600)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="container environment variable (repeatable)",
    )
    parser.add_argument(
        "--model-cache",
        choices=MODEL_CACHE_SETTINGS,
        help="MultiModelConfig.ModelCacheSetting (SageMaker's default: Enabled)",
    )
    parser.add_argument("--variant-name", default="AllTraffic", help="default: %(default)s")
    metrics = parser.add_argument_group(
        "metrics",
        "SageMaker scrapes the container's Prometheus metrics (per model: requests, latency, "
        "errors, LOADs, memory) and publishes them to CloudWatch: "
        "ContainerMetricsConfig on the model, MetricsConfig.EnableDetailedObservability on "
        "the endpoint config",
    )
    metrics.add_argument(
        "--metrics-path",
        metavar="PATH",
        help="the path SageMaker scrapes on the container's port; a path other than "
        "/metrics is also set as the container's MME_METRICS_PATH (default: /metrics)",
    )
    metrics.add_argument(
        "--metrics-frequency",
        type=int,
        metavar="SECONDS",
        help="how often SageMaker publishes them: 10, 30, 60, 120, 180, 240 or 300 (default: 60)",
    )
    metrics.add_argument(
        "--no-metrics",
        action="store_true",
        help="no ContainerMetricsConfig, and detailed observability off",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="if the endpoint exists with other settings, switch it with UpdateEndpoint, "
        "then delete the replaced config and model; if SageMaker rolls the update back, "
        "the new ones are deleted instead",
    )
    _add_wait_options(parser, default_timeout=3600, default_poll=30)
    parser.set_defaults(run=_guarded(_deploy))


def _add_wait_options(
    parser: argparse.ArgumentParser, default_timeout: int, default_poll: int
) -> None:
    parser.add_argument("--no-wait", action="store_true", help="return without waiting")
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=default_timeout,
        metavar="SECONDS",
        help="give up waiting after this long (default: %(default)s)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=default_poll,
        metavar="SECONDS",
        help="time between status checks (default: %(default)s)",
    )


# ---- autoscale


def _autoscale(args: argparse.Namespace) -> int:
    target = _target(args)
    client = target.client("application-autoscaling")
    if args.remove:
        removed = autoscaling.remove_autoscaling(client, args.endpoint)
        for line in removed:
            print(f"removed {line}")
        if not removed:
            print(f"endpoint {args.endpoint} had no autoscaling")
        return 0
    spec = autoscaling.ScalingSpec(
        endpoint_name=args.endpoint,
        variant_name=args.variant_name,
        min_capacity=args.min_instances,
        max_capacity=args.max_instances,
        target_invocations=args.target_invocations,
        scale_in_cooldown_s=args.scale_in_cooldown,
        scale_out_cooldown_s=args.scale_out_cooldown,
        policy_name=args.policy_name,
    )
    spec.validate()
    arn = autoscaling.enable_autoscaling(client, target.client("sagemaker"), spec)
    print(
        f"{spec.resource_id}: {spec.min_capacity}-{spec.max_capacity} instances, target "
        f"{spec.target_invocations:g} {autoscaling.METRIC}\n  policy: {arn}"
    )
    return 0


def _add_autoscale(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "autoscale",
        parents=[common],
        help="scale an endpoint variant on invocations per instance (or --remove it)",
        description="Register the variant with Application Auto Scaling (min..max instances) "
        "and put a target-tracking policy on SageMakerVariantInvocationsPerInstance, the "
        "metric AWS recommends for multi-model endpoints. Run again to change the settings.",
    )
    parser.add_argument("endpoint", metavar="ENDPOINT", help="endpoint name")
    parser.add_argument("--min-instances", type=int, default=1, help="default: %(default)s")
    parser.add_argument("--max-instances", type=int, default=2, help="default: %(default)s")
    parser.add_argument(
        "--target-invocations",
        type=float,
        default=70.0,
        help="invocations per instance and minute to aim for (default: %(default)s)",
    )
    parser.add_argument(
        "--scale-in-cooldown",
        type=int,
        default=600,
        metavar="SECONDS",
        help="default: %(default)s",
    )
    parser.add_argument(
        "--scale-out-cooldown",
        type=int,
        default=300,
        metavar="SECONDS",
        help="default: %(default)s",
    )
    parser.add_argument("--variant-name", default="AllTraffic", help="default: %(default)s")
    parser.add_argument(
        "--policy-name", default=autoscaling.DEFAULT_POLICY_NAME, help="default: %(default)s"
    )
    parser.add_argument(
        "--remove", action="store_true", help="remove the endpoint's policies and targets"
    )
    parser.set_defaults(run=_guarded(_autoscale))


# ---- invoke


def _invoke(args: argparse.Namespace) -> int:
    request = invoke.InvokeRequest(
        endpoint_name=args.endpoint,
        target_model=args.target_model,
        body=_read_body(args.body),
        content_type=args.content_type,
        accept=args.accept,
        custom_attributes=args.custom_attributes,
        target_variant=args.target_variant,
    )
    request.validate()
    target = _target(args)
    runtime = target.client(
        "sagemaker-runtime",
        config=invoke.runtime_config(args.retries),
        default_region=LOCAL_REGION if target.local_runtime() else None,
    )
    result = invoke.invoke(runtime, request)
    if args.output == "-":
        sys.stdout.buffer.write(result.body)
        sys.stdout.buffer.flush()
    else:
        Path(args.output).write_bytes(result.body)
        print(
            f"wrote {len(result.body)} bytes ({result.content_type or 'no content type'}) "
            f"to {args.output}",
            file=sys.stderr,
        )
    return 0


def _read_body(source: str) -> bytes:
    if source != "-":
        path = Path(source)
        if not path.is_file():
            raise errors.UsageError(f"--body {source}: no such file")
        return path.read_bytes()
    if sys.stdin.isatty():
        raise errors.UsageError("give the request body with --body FILE, or pipe it to stdin")
    return sys.stdin.buffer.read()


def _add_invoke(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "invoke",
        parents=[common],
        help="invoke one model of a multi-model endpoint",
        description="Call InvokeEndpoint with TargetModel and print the response body. Uses a "
        "70 s read timeout and retries ModelNotReadyException while a cold model loads. "
        "Works against `mme endpoint` with --endpoint-url http://127.0.0.1:PORT.",
    )
    parser.add_argument("endpoint", metavar="ENDPOINT", help="endpoint name")
    parser.add_argument(
        "--target-model", required=True, help="the model's key under the prefix, e.g. m.tar.gz"
    )
    parser.add_argument("--body", default="-", help="request body file; '-' = stdin (default)")
    parser.add_argument("--content-type", help="the body's MIME type, e.g. application/x-image")
    parser.add_argument("--accept", help="the MIME type wanted back, e.g. application/json")
    parser.add_argument("--custom-attributes", help="passed to the model as is")
    parser.add_argument("--target-variant", help="send to this production variant")
    parser.add_argument("--output", default="-", help="write the body here ('-' = stdout)")
    parser.add_argument(
        "--retries",
        type=int,
        default=invoke.DEFAULT_RETRIES,
        help="retries while the model is not ready (default: %(default)s)",
    )
    parser.set_defaults(run=_guarded(_invoke))


# ---- teardown


def _teardown(args: argparse.Namespace) -> int:
    target = _target(args)
    result = teardown.teardown(
        target.client("sagemaker"),
        target.client("application-autoscaling"),
        args.endpoint,
        timeout_s=args.wait_timeout,
        poll_s=args.poll_interval,
        report=print,
    )
    if result.nothing_found:
        print(f"nothing to delete for endpoint {args.endpoint}")
    return 0


def _add_teardown(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "teardown",
        parents=[common],
        help="delete an endpoint with its autoscaling, endpoint configs and models",
        description="Delete the endpoint's scaling policies and scalable targets, the "
        "endpoint, and the endpoint configs and models deploy made for it: those tagged "
        "mme:endpoint=ENDPOINT (names alone are not trusted: names cut to fit SageMaker's "
        "63 characters can be shared). An endpoint without that tag is refused and nothing "
        "is deleted. Safe to run again. The model archives in S3 are kept.",
    )
    parser.add_argument("endpoint", metavar="ENDPOINT", help="endpoint name")
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=1800,
        metavar="SECONDS",
        help="how long to wait for the endpoint's deletion (default: %(default)s)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=15,
        metavar="SECONDS",
        help="time between status checks (default: %(default)s)",
    )
    parser.set_defaults(run=_guarded(_teardown))

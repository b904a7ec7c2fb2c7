"""The `mme` command: one subcommand per job, each with its own --help."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from mme import __version__
from mme.settings import Settings, SettingsError

LOG_FORMAT = "%(asctime)s [%(levelname)s] %(name)s - %(message)s"


def _serve(args: argparse.Namespace) -> int:
    from mme.server import DEFAULT_HANDLER_SERVICE, serve

    settings = args.settings
    handler = args.handler or settings.handler_service or DEFAULT_HANDLER_SERVICE
    return serve(settings, handler)


def _add_serve(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the multi-model server (what the image runs for `serve`)",
        description="Start Multi Model Server in SageMaker multi-model mode and block until it "
        "stops. SIGTERM stops it cleanly. Settings come from the environment (see "
        "docs/configuration.md), for example SAGEMAKER_BIND_TO_PORT.",
    )
    parser.add_argument(
        "--handler",
        default="",
        help="an MMS custom service to use instead of ours, as 'module:function', "
        "'/path/to/module.py:function' or a module with one handler class "
        "(same as SAGEMAKER_HANDLER)",
    )
    parser.set_defaults(run=_serve)


def _add_package(commands: argparse._SubParsersAction) -> None:
    # mme.packaging imports torch only when it builds an example, so this import is cheap.
    from mme.packaging import add_arguments, package_command

    parser = commands.add_parser(
        "package",
        help="check and pack model folders (or the ResNet examples) as model.tar.gz",
        description="Check each model folder (weights + code/) and pack it as <name>.tar.gz in "
        "the layout SageMaker extracts. The check imports code/inference.py in this "
        "environment, after installing code/requirements.txt (if any) into a temporary folder "
        "as the container's LOAD does: offline from code/lib/ when the model ships one, else "
        "from the package index. The names resnet_18 and resnet_152 build the example image "
        "classifiers from code/image_classifier.",
    )
    add_arguments(parser)
    parser.set_defaults(run=package_command)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `mme` command."""
    parser = argparse.ArgumentParser(
        prog="mme",
        description="SageMaker multi-model container for PyTorch, and the tools around it.",
    )
    parser.add_argument("--version", action="version", version=f"mme {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(commands)
    _add_package(commands)
    from mme.endpoint.command import register as register_endpoint

    register_endpoint(commands)
    from mme.aws.command import register as register_deploy_commands

    register_deploy_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `mme` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.settings = Settings.from_env()
    except SettingsError as exc:
        print(f"mme: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.settings.log_level, format=LOG_FORMAT, stream=sys.stdout)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())

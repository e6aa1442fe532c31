"""The `jobscheduler` command: run the service, print the version, and talk to a running
service (the client commands: jobscheduler.cli.jobs, .streams, .schedules and .templates).

jobscheduler serve          run the gRPC service (configuration from the environment)
jobscheduler version        the version
jobscheduler version-full   version, commit, build date and Python
jobscheduler completion     a shell completion script (bash, zsh)
jobscheduler schedule|status|list|cancel|resume|job-types|health|watch|logs|schedules|templates
                            call a running service (`COMMAND --help`)
"""

from __future__ import annotations

import argparse
import os
import sys

from jobscheduler.obs.version import build_info

CLIENT_COMMANDS = frozenset(
    {
        "schedule",
        "status",
        "list",
        "cancel",
        "resume",
        "job-types",
        "health",
        "watch",
        "logs",
        "schedules",
        "templates",
    }
)


def _serve() -> int:
    # Imported here so `version` and the client commands work without the Kubernetes client.
    from jobscheduler.transport.server import serve_from_env

    return serve_from_env()


def build_parser() -> argparse.ArgumentParser:
    # Imported here, not above, so that main() can quiet grpc before grpc is first imported.
    from jobscheduler.cli import channel, completion, jobs, schedules, streams, templates
    from jobscheduler.cli.exits import exit_codes_help

    parser = argparse.ArgumentParser(
        prog="jobscheduler",
        description=__doc__,
        epilog=exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    channel.add_client_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="run the gRPC service (config from GRPC_PORT, K8S_NAMESPACE, ...)")
    sub.add_parser("version", help="print the version")
    sub.add_parser("version-full", help="print version, commit, build date and Python version")
    completion.add_command(sub)
    common = argparse.ArgumentParser(add_help=False)
    channel.add_client_options(common)
    for module in (jobs, streams, schedules, templates):
        module.add_commands(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if CLIENT_COMMANDS.intersection(argv):
        # grpc's C core reads this once, at import: without it a failed TLS handshake is
        # printed as a log line of its own above the command's one-line error.
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from jobscheduler.cli import channel, completion
    from jobscheduler.cli.flags import STATE_NAMES

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in CLIENT_COMMANDS:
        return channel.run(args)
    if given := channel.given_client_options(args):
        parser.error(f"{', '.join(given)}: only for the client commands, not for {args.command}")
    if args.command == "serve":
        return _serve()
    if args.command == "completion":
        print(completion.script(args.shell, parser, states=[s.lower() for s in STATE_NAMES]), end="")
        return 0
    info = build_info()
    print(info.version if args.command == "version" else info.full())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `jobscheduler` command: run the service, print the version.

jobscheduler serve          run the gRPC service (configuration from the environment)
jobscheduler version        the version
jobscheduler version-full   version, commit, build date and Python
"""

from __future__ import annotations

import argparse
import sys

from jobscheduler.version import build_info


def _serve() -> int:
    # Imported here so `version` works without touching grpc or the Kubernetes client.
    from jobscheduler.config import ConfigError, Settings
    from jobscheduler.gateway import GatewayConfigError, KubeGateway, RetryPolicy, load_api_client
    from jobscheduler.logs import configure_logging
    from jobscheduler.registry import Registry, RegistryError
    from jobscheduler.server import serve

    try:
        settings = Settings.from_env()
    except ConfigError as e:
        print(f"jobscheduler: bad configuration: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        registry = Registry.from_entry_points()
        api = load_api_client(in_cluster=settings.in_cluster, kubeconfig=settings.kubeconfig)
    except (GatewayConfigError, RegistryError) as e:
        print(f"jobscheduler: {e}", file=sys.stderr)
        return 2
    gateway = KubeGateway(api, retry=RetryPolicy(default_timeout=settings.kube_timeout_seconds))
    serve(settings, gateway, registry)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jobscheduler", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="run the gRPC service (config from GRPC_PORT, K8S_NAMESPACE, ...)")
    sub.add_parser("version", help="print the version")
    sub.add_parser("version-full", help="print version, commit, build date and Python version")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve()
    info = build_info()
    print(info.version if args.command == "version" else info.full())
    return 0


if __name__ == "__main__":
    sys.exit(main())

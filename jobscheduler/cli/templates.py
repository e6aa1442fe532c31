"""`jobscheduler templates VERB`: named, versioned jobs kept in the cluster — create, update
(a new version), get, list and delete. `schedule from-template NAME` starts a job from one.

A template's job is given as `schedule` gives one (a job-type subcommand and its flags), or as
a YAML/JSON file (--file) as `templates get -o yaml` prints it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.cli.channel import Context
from jobscheduler.cli.exits import EXIT_OK, EXIT_USAGE, ClientError, ExitStatus
from jobscheduler.cli.flags import add_command, add_group, add_named_verb, int32
from jobscheduler.cli.jobspec import add_job_types, job_request, type_examples
from jobscheduler.cli.output import emit, render_template, render_templates
from jobscheduler.cli.specfile import load_message


def template_of(args: argparse.Namespace, *, namespace: str) -> pb.Template:
    """The template the flags describe, over the one in --file when given."""
    template = pb.Template()
    if args.file is not None:
        template = load_message(args.file, template)
    elif getattr(args, "fill_job", None) is None:
        raise ClientError(EXIT_USAGE, "the job: a job type (`timer`, ... see --help) or --file")
    template.name = args.resource_name
    template.namespace = namespace or template.namespace
    if args.description is not None:
        template.description = args.description
    if getattr(args, "fill_job", None) is not None:
        template.job.CopyFrom(job_request(args))
    return template


def _emit_one(ctx: Context, template: pb.Template) -> ExitStatus:
    emit(template, ctx.options, lambda: render_template(template), ctx.out)
    return EXIT_OK


def run_create(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    request = pb.CreateTemplateRequest(template=template_of(args, namespace=ctx.options.namespace))
    return _emit_one(ctx, ctx.stub.CreateTemplate(request, timeout=ctx.options.timeout))


def run_update(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    request = pb.UpdateTemplateRequest(
        template=template_of(args, namespace=ctx.options.namespace),
        expected_version=args.expected_version or 0,
    )
    return _emit_one(ctx, ctx.stub.UpdateTemplate(request, timeout=ctx.options.timeout))


def run_get(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    request = pb.GetTemplateRequest(
        name=args.resource_name, namespace=ctx.options.namespace, version=args.version or 0
    )
    return _emit_one(ctx, ctx.stub.GetTemplate(request, timeout=ctx.options.timeout))


def run_list(ctx: Context, _args: argparse.Namespace) -> ExitStatus:
    response = ctx.stub.ListTemplates(
        pb.ListTemplatesRequest(namespace=ctx.options.namespace), timeout=ctx.options.timeout
    )
    if ctx.options.output == "table" and not response.templates:
        where = f" in namespace {ctx.options.namespace}" if ctx.options.namespace else ""
        print(f"no templates found{where}", file=ctx.err)
    emit(
        response,
        ctx.options,
        lambda: render_templates(response.templates) if response.templates else "",
        ctx.out,
    )
    return EXIT_OK


def run_delete(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    request = pb.DeleteTemplateRequest(name=args.resource_name, namespace=ctx.options.namespace)
    response = ctx.stub.DeleteTemplate(request, timeout=ctx.options.timeout)
    emit(response, ctx.options, lambda: f"template {args.resource_name} deleted, every version", ctx.out)
    return EXIT_OK


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Adds `templates` and its verbs."""
    verbs = add_group(
        sub,
        "templates",
        "named, versioned jobs: create, update, get, list, delete",
        """\
  jobscheduler templates create report --description "nightly report" \\
      container --image registry.example/report:1 --arg --full
  jobscheduler schedule from-template report -l run=manual
  jobscheduler templates get report --version 1 -o yaml
""",
    )

    def verb(name: str, help_text: str, examples: str) -> argparse.ArgumentParser:
        return add_named_verb(
            verbs, name, help_text, examples, common=common, within="templates", what="template"
        )

    for name, handler, help_text in (
        ("create", run_create, "store a template, version 1: a description, then its job"),
        ("update", run_update, "store a new version of a template (its whole description and job)"),
    ):
        parser = verb(
            name,
            help_text,
            f"""\
  jobscheduler templates {name} report --description "nightly report" \\
      container --image registry.example/report:1
  jobscheduler templates get report -o yaml > t.yaml   # edit, then:
  jobscheduler templates {name} report --file t.yaml
""",
        )
        parser.add_argument("--file", type=Path, metavar="FILE", help="the template as YAML or JSON")
        parser.add_argument("--description", metavar="TEXT", help="for people; at most 1,024 characters")
        if name == "update":
            parser.add_argument(
                "--expected-version", type=int32, metavar="N",
                help="refuse (exit 4) unless N is still the latest version",
            )  # fmt: skip
        parser.set_defaults(handler=handler, fill_job=None)
        types = parser.add_subparsers(dest="job_type_command", metavar="TYPE")
        add_job_types(
            types,
            purpose="templates",
            common=common,
            within=f"templates {name}",
            handler=handler,
            examples=type_examples(f"templates {name} NAME"),
        )

    get = verb("get", "show a template's latest version, or the one asked for, with its job", """\
  jobscheduler templates get report
  jobscheduler templates get report --version 2 -o yaml
""")  # fmt: skip
    get.add_argument("--version", type=int32, metavar="N", help="default: the latest")
    get.set_defaults(handler=run_get)
    lister = add_command(
        verbs, "list", "list the templates' latest versions, by name", "  jobscheduler templates list\n",
        common=common, within="templates",
    )  # fmt: skip
    lister.set_defaults(handler=run_list)
    delete = verb(
        "delete",
        "delete a template with every version; jobs made from it stay",
        "  jobscheduler templates delete report\n",
    )
    delete.set_defaults(handler=run_delete)

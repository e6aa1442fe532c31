"""The README and docs/ hold together: every relative link resolves to a file and, with an
anchor, to one of its headings; the Role shown in docs/operations.md is the one k8s/rbac.yaml
grants; the architecture guide names every layer the package has; every variable a workload
reads is documented; the README stays an entry point."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def outside_code(text: str) -> str:
    """The text without fenced code blocks and inline code spans."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    seen: dict[str, int] = {}
    found = set()
    for title in re.findall(r"^#{1,6} (.+)$", text, re.M):
        base = slug(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def relative_links() -> list[tuple[Path, str]]:
    return [
        (path, target)
        for path in DOCS
        for target in LINK.findall(outside_code(path.read_text()))
        if not re.match(r"[a-z]+:", target)
    ]


def test_the_docs_have_relative_links_to_check() -> None:
    links = relative_links()
    assert "docs/configuration.md" in {t for _, t in links}
    assert len(links) > 50


def test_slugs_follow_github() -> None:
    assert slug("Security (`SecuritySettings`)") == "security-securitysettings"
    assert slug("The job's name") == "the-jobs-name"
    assert slug("Pinned versions (`hack/versions.env`)") == "pinned-versions-hackversionsenv"


@pytest.mark.parametrize(
    ("doc", "target"),
    [pytest.param(p, t, id=f"{p.relative_to(ROOT)}->{t}") for p, t in relative_links()],
)
def test_relative_link_resolves(doc: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    file = (doc.parent / path).resolve() if path else doc
    assert file.exists(), f"{doc.relative_to(ROOT)}: {target}: no such file"
    if anchor:
        assert (
            file.suffix == ".md"
        ), f"{doc.relative_to(ROOT)}: {target}: an anchor in a file that is not Markdown"
        assert anchor in anchors(file), f"{doc.relative_to(ROOT)}: {target}: no such heading"


# -- the Role ----------------------------------------------------------------------------------------


def rbac() -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all((ROOT / "k8s" / "rbac.yaml").read_text()) if d]


def test_rbac_yaml_holds_the_service_account_role_and_binding_in_their_namespace() -> None:
    docs = list(rbac())
    objects = {d["kind"]: d for d in docs}  # type: ignore[misc]
    assert sorted(objects) == ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"]
    namespaced = [o for kind, o in objects.items() if not kind.startswith("Cluster")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"jobscheduler"}  # type: ignore[index]
    # The cluster-wide grants, read-only: PriorityClasses (ScheduleJob's priority_class_name) and
    # Kueue's cluster-scoped objects (a priority's WorkloadPriorityClass, ListQueues' quotas).
    cluster_roles = {d["metadata"]["name"]: d["rules"] for d in docs if d["kind"] == "ClusterRole"}  # type: ignore[index]
    assert cluster_roles == {
        "jobscheduler-priorityclasses": [
            {"apiGroups": ["scheduling.k8s.io"], "resources": ["priorityclasses"], "verbs": ["get"]}
        ],
        "jobscheduler-queues": [
            {
                "apiGroups": ["kueue.x-k8s.io"],
                "resources": ["workloadpriorityclasses", "clusterqueues"],
                "verbs": ["get"],
            }
        ],
    }
    for d in docs:
        if d["kind"] == "ClusterRoleBinding":  # type: ignore[index]
            assert d["subjects"] == [  # type: ignore[index]
                {"kind": "ServiceAccount", "name": "jobscheduler", "namespace": "jobscheduler"}
            ]
    binding = objects["RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "jobscheduler",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "jobscheduler", "namespace": "jobscheduler"}
    ]
    kustomization = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())
    assert "rbac.yaml" in kustomization["resources"]


def documented_role() -> set[tuple[str, str, tuple[str, ...]]]:
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("\n### The Role\n", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| (`[^`]+`|core) \| `([^`]+)` \| ([a-z, ]+) \|", section, re.M)
    return {
        (group.strip("`").replace("core", ""), resource, tuple(verbs.split(", ")))
        for group, resource, verbs in rows
    }


def test_the_deploy_guide_shows_exactly_what_the_role_grants() -> None:
    [role] = [d for d in rbac() if d["kind"] == "Role"]
    granted = {
        (group, resource, tuple(rule["verbs"]))
        for rule in role["rules"]  # type: ignore[attr-defined]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert documented_role() == granted


def test_the_role_table_is_read() -> None:
    assert ("", "pods/log", ("get",)) in documented_role()
    assert ("batch", "jobs", ("create", "get", "list", "watch", "patch", "delete")) in documented_role()


# -- the architecture --------------------------------------------------------------------------------


def test_the_architecture_guide_names_every_layer() -> None:
    packages = {p.parent.name for p in (ROOT / "jobscheduler").glob("*/__init__.py")}
    text = (ROOT / "docs" / "architecture.md").read_text()
    documented = set(re.findall(r"^  \| `jobscheduler/(\w+)` \|", text, re.M))
    assert documented == packages


# -- the workloads' environment -------------------------------------------------------------------


def variables_read_by_the_workloads() -> dict[str, str]:
    """Variables the pod-side programs read: every call given `environ` and then a variable's name
    (read(environ, "JOB_ID"), seconds(environ, "TIMER_REPORT_TIMEOUT_SECONDS", ...), ...)."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "jobscheduler" / "workloads").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            for before, arg in zip(node.args, node.args[1:], strict=False):
                if (
                    isinstance(before, ast.Name)
                    and before.id == "environ"
                    and isinstance(arg, ast.Constant)
                    and isinstance(arg.value, str)
                    and re.fullmatch(r"[A-Z][A-Z0-9_]+", arg.value)
                ):
                    found.setdefault(arg.value, f"{path.name}:{node.lineno}")
    return found


def test_every_variable_a_workload_reads_is_documented() -> None:
    read = variables_read_by_the_workloads()
    text = (ROOT / "docs" / "workloads.md").read_text() + (ROOT / "docs" / "timer-report.md").read_text()
    assert {"WEBHOOK_URL", "TIMER_NAME", "HEALTHCHECK_TARGETS", "JOB_ID"} <= read.keys()
    assert {name: where for name, where in read.items() if f"`{name}`" not in text} == {}


def test_the_readme_is_an_entry_point_under_250_lines() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) < 250

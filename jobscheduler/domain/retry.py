"""Retry rules: which pod failures a Job retries, fails at once, or does not count, rendered as
the Job's `spec.podFailurePolicy`.

Pure. Checked as the API server checks a podFailurePolicy (rule and value limits, exit code 0
only with NotIn, a container name the pod has, FailIndex only with backoffLimitPerIndex), so a
bad policy is an INVALID_ARGUMENT naming the request field, never a 422 from Kubernetes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.validation import check_qualified_key, is_dns1123_label

__all__ = [
    "ACTIONS",
    "OOM_EXIT_CODE",
    "OPERATORS",
    "RetryPolicy",
    "RetryRule",
    "check_retry",
    "render_pod_failure_policy",
]

# The podFailurePolicy actions and exit-code operators, as Kubernetes spells them.
ACTIONS = ("FailJob", "FailIndex", "Ignore", "Count")
OPERATORS = ("In", "NotIn")
# What an OOM-killed container exits with (128 + SIGKILL). Kubernetes has no pod condition for
# an OOM kill; the container's terminated reason says OOMKilled, but a rule can only match the
# exit code, which every SIGKILL shares.
OOM_EXIT_CODE = 137
DISRUPTION_CONDITION = "DisruptionTarget"
# The API server's limits (pkg/apis/batch/validation).
MAX_RULES = 20
MAX_EXIT_CODES = 255
MAX_POD_CONDITIONS = 20
# A Linux process exits with 0 .. 255; anything else in a rule is a mistake that never matches.
MAX_EXIT_CODE = 255


@dataclass(frozen=True, slots=True)
class RetryRule:
    """One podFailurePolicy rule. Plain values only (strings, ints, tuples), so that a rule
    survives a JSON round trip (schedules keep their job request as JSON)."""

    action: str  # one of ACTIONS; "" is refused
    exit_codes: tuple[int, ...] = ()
    operator: str = "In"  # one of OPERATORS; with exit_codes
    container_name: str = ""  # with exit_codes; "" = any container
    pod_conditions: tuple[str, ...] = ()  # condition types that must be True on the failed pod


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The request's retry rules. The shortcuts become rules in this order, before `rules`:
    ignore_disruptions, count_oom, fail_on_exit_codes, retry_on_exit_codes."""

    fail_on_exit_codes: tuple[int, ...] = ()
    retry_on_exit_codes: tuple[int, ...] = ()
    ignore_disruptions: bool = False
    count_oom: bool = False
    rules: tuple[RetryRule, ...] = ()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RetryPolicy:
        """The policy back from `dataclasses.asdict` output that went through JSON."""
        return cls(
            fail_on_exit_codes=tuple(raw.get("fail_on_exit_codes") or ()),
            retry_on_exit_codes=tuple(raw.get("retry_on_exit_codes") or ()),
            ignore_disruptions=bool(raw.get("ignore_disruptions")),
            count_oom=bool(raw.get("count_oom")),
            rules=tuple(
                RetryRule(
                    action=str(rule.get("action") or ""),
                    exit_codes=tuple(rule.get("exit_codes") or ()),
                    operator=str(rule.get("operator") or "In"),
                    container_name=str(rule.get("container_name") or ""),
                    pod_conditions=tuple(rule.get("pod_conditions") or ()),
                )
                for rule in raw.get("rules") or ()
            ),
        )


def check_retry(policy: RetryPolicy, *, field: str = "retry") -> RetryPolicy:
    """The policy validated, its exit codes sorted and de-duplicated (Kubernetes wants them
    ordered); errors name the request field (`retry.rules[2].exit_codes`)."""
    fail_on = _exit_codes(f"{field}.fail_on_exit_codes", policy.fail_on_exit_codes, allow_zero=False)
    retry_on = _exit_codes(f"{field}.retry_on_exit_codes", policy.retry_on_exit_codes, allow_zero=False)
    both = sorted(set(fail_on) & set(retry_on))
    if both:
        raise InvalidArgumentError(
            f"{field}.retry_on_exit_codes",
            f"exit codes {_codes(both)} are also in fail_on_exit_codes; "
            "a code either fails the job or is retried",
        )
    if policy.count_oom and OOM_EXIT_CODE in fail_on:
        raise InvalidArgumentError(
            f"{field}.fail_on_exit_codes",
            f"{OOM_EXIT_CODE} fails the job at once while count_oom retries it; drop one of the two",
        )
    rules = tuple(_checked_rule(f"{field}.rules[{i}]", rule) for i, rule in enumerate(policy.rules))
    checked = replace(policy, fail_on_exit_codes=fail_on, retry_on_exit_codes=retry_on, rules=rules)
    count = len(_shortcut_rules(checked)) + len(rules)
    if count > MAX_RULES:
        raise InvalidArgumentError(
            field,
            f"makes {count} podFailurePolicy rules (each shortcut is one); "
            f"Kubernetes allows at most {MAX_RULES}",
        )
    return checked


def render_pod_failure_policy(
    policy: RetryPolicy,
    *,
    container_names: Collection[str],
    per_index: bool,
    field: str = "retry",
) -> dict[str, Any] | None:
    """`spec.podFailurePolicy` for a policy passed through check_retry; None when it has no rule.
    container_names: the pod's containers (and init containers); per_index: the Job sets
    backoffLimitPerIndex, which FailIndex needs."""
    for i, rule in enumerate(policy.rules):
        where = f"{field}.rules[{i}]"
        if rule.container_name and rule.container_name not in container_names:
            raise InvalidArgumentError(
                f"{where}.container_name",
                f"{rule.container_name!r} is not a container of this job; its containers: "
                + ", ".join(sorted(container_names)),
            )
        if rule.action == "FailIndex" and not per_index:
            raise InvalidArgumentError(
                f"{where}.action",
                "FAIL_INDEX needs an indexed job with a per-index retry limit "
                "(batch_job.backoff_limit_per_index)",
            )
    rules = [*_shortcut_rules(policy), *(_render_rule(rule) for rule in policy.rules)]
    return {"rules": rules} if rules else None


def _shortcut_rules(policy: RetryPolicy) -> list[dict[str, Any]]:
    # Disruptions first: a pod killed by an eviction exits 137 or 143 too, and must be ignored,
    # not counted by count_oom or failed by an exit-code rule.
    rules: list[dict[str, Any]] = []
    if policy.ignore_disruptions:
        rules.append(_conditions_rule("Ignore", (DISRUPTION_CONDITION,)))
    if policy.count_oom:
        rules.append(_exit_code_rule("Count", "In", (OOM_EXIT_CODE,)))
    if policy.fail_on_exit_codes:
        rules.append(_exit_code_rule("FailJob", "In", policy.fail_on_exit_codes))
    if policy.retry_on_exit_codes:
        rules.append(_exit_code_rule("FailJob", "NotIn", policy.retry_on_exit_codes))
    return rules


def _render_rule(rule: RetryRule) -> dict[str, Any]:
    if rule.pod_conditions:
        return _conditions_rule(rule.action, rule.pod_conditions)
    return _exit_code_rule(rule.action, rule.operator, rule.exit_codes, container=rule.container_name)


def _exit_code_rule(
    action: str, operator: str, codes: Iterable[int], *, container: str = ""
) -> dict[str, Any]:
    on_exit_codes: dict[str, Any] = {"operator": operator, "values": list(codes)}
    if container:
        on_exit_codes["containerName"] = container
    return {"action": action, "onExitCodes": on_exit_codes}


def _conditions_rule(action: str, types: Iterable[str]) -> dict[str, Any]:
    return {"action": action, "onPodConditions": [{"type": t, "status": "True"} for t in types]}


def _checked_rule(where: str, rule: RetryRule) -> RetryRule:
    if not rule.action:
        raise InvalidArgumentError(f"{where}.action", "is required: FAIL_JOB, FAIL_INDEX, IGNORE or COUNT")
    if rule.action not in ACTIONS:
        raise InvalidArgumentError(f"{where}.action", f"{rule.action!r} is not one of {', '.join(ACTIONS)}")
    if rule.operator not in OPERATORS:
        raise InvalidArgumentError(
            f"{where}.operator", f"{rule.operator!r} is not one of {', '.join(OPERATORS)}"
        )
    if bool(rule.exit_codes) == bool(rule.pod_conditions):
        raise InvalidArgumentError(where, "set exactly one of exit_codes and pod_conditions")
    if rule.pod_conditions:
        if rule.container_name:
            raise InvalidArgumentError(
                f"{where}.container_name", "applies to exit_codes only; a pod condition is the pod's"
            )
        if len(rule.pod_conditions) > MAX_POD_CONDITIONS:
            raise InvalidArgumentError(
                f"{where}.pod_conditions",
                f"has {len(rule.pod_conditions)} entries; Kubernetes allows at most {MAX_POD_CONDITIONS}",
            )
        for j, condition in enumerate(rule.pod_conditions):
            check_qualified_key(f"{where}.pod_conditions[{j}]", condition)
        # Order carries no meaning for a condition list: duplicates only add noise.
        return replace(rule, pod_conditions=tuple(dict.fromkeys(rule.pod_conditions)))
    if rule.container_name and not is_dns1123_label(rule.container_name):
        raise InvalidArgumentError(
            f"{where}.container_name", f"{rule.container_name!r} is not a container name (a DNS-1123 label)"
        )
    codes = _exit_codes(f"{where}.exit_codes", rule.exit_codes, allow_zero=rule.operator == "NotIn")
    return replace(rule, exit_codes=codes)


def _exit_codes(field: str, codes: Iterable[int], *, allow_zero: bool) -> tuple[int, ...]:
    unique = sorted(set(codes))
    if len(unique) > MAX_EXIT_CODES:
        raise InvalidArgumentError(
            field, f"has {len(unique)} exit codes; Kubernetes allows at most {MAX_EXIT_CODES}"
        )
    for code in unique:
        if code == 0 and not allow_zero:
            raise InvalidArgumentError(
                field, "0 is success, which no rule ever sees; it is allowed only with the NOT_IN operator"
            )
        if not 0 <= code <= MAX_EXIT_CODE:
            raise InvalidArgumentError(field, f"{code} is not an exit code (0 .. {MAX_EXIT_CODE})")
    return tuple(unique)


def _codes(codes: Iterable[int]) -> str:
    return ", ".join(str(c) for c in codes)

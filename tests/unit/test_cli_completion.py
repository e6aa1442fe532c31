"""`jobscheduler completion bash|zsh`: the script is generated from the parser, and bash,
running it, completes commands, verbs, flags and flag values as the parser defines them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobscheduler.cli.main import main

BASH = shutil.which("bash")


def script(shell: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "jobscheduler.cli.main", "completion", shell],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return out.stdout


def complete(line: str) -> list[str]:
    """What bash offers for the last word of `line`, after sourcing the generated script."""
    assert BASH is not None
    program = f"""
source /dev/stdin <<'SCRIPT'
{script("bash")}
SCRIPT
read -ra COMP_WORDS <<< {line!r}
[[ {line!r} == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
_jobscheduler
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    out = subprocess.run([BASH, "-c", program], capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.split()


@pytest.mark.skipif(BASH is None, reason="needs bash")
@pytest.mark.parametrize(
    ("line", "offered"),
    [
        ("jobscheduler sched", ["schedule", "schedules"]),
        (
            "jobscheduler schedules ",
            ["create", "update", "get", "list", "delete", "pause", "resume", "trigger", "backfill"],
        ),
        ("jobscheduler templates create report --description x con", ["container"]),
        ("jobscheduler schedules create nightly --cron '0 2 * * *' ti", ["timer"]),
        ("jobscheduler -o ", ["table", "json", "yaml"]),
        ("jobscheduler list --state r", ["running"]),
        ("jobscheduler schedule timer --dur", ["--duration"]),
        ("jobscheduler --server x:1 stat", ["status"]),
        ("jobscheduler logs job-1 --fo", ["--follow"]),
        ("jobscheduler completion ", ["bash", "zsh"]),
    ],
)
def test_bash_completes_what_the_parser_defines(line: str, offered: list[str]) -> None:
    assert complete(line) == offered


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_a_file_flag_completes_file_names(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("")

    assert complete(f"jobscheduler health --ca-cert {tmp_path}/c") == [f"{tmp_path}/ca.pem"]
    assert complete(f"jobscheduler schedules update x --file {tmp_path}/") == [f"{tmp_path}/ca.pem"]


def test_zsh_runs_the_bash_function_through_bashcompinit() -> None:
    text = script("zsh")

    assert text.startswith("#compdef jobscheduler\n")
    assert "bashcompinit" in text
    assert "complete -o default -F _jobscheduler jobscheduler" in text


def test_completion_takes_no_client_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--server", "x:1", "completion", "bash"])

    assert exit_.value.code == 2
    assert "only for the client commands, not for completion" in capsys.readouterr().err

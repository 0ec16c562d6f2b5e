"""Every command the README and .claude/ tell people to run exists, with the options they use.

Commands are read from inline code and fenced blocks: ``risk-monitor ...``, ``risk-sim ...`` and
``dg ...``; each is walked through the real click groups (sub-commands, then options)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / ".claude").rglob("*.md"))]
PROGRAMS = ("risk-monitor", "risk-sim", "dg")
CODE = re.compile(r"```[^\n]*\n(.*?)```|`([^`\n]+)`", re.DOTALL)
INVOCATION = re.compile(r"(?<![\w/.-])(risk-monitor|risk-sim|dg)((?:[ \t]+[^\s|;&)`]+)*)")


def groups() -> dict[str, click.Command]:
    from dagster_dg_cli.cli import cli as dg_cli

    from risk_monitor.cli import cli as risk_monitor_cli
    from risk_sim.cli import cli as risk_sim_cli

    return {"risk-monitor": risk_monitor_cli, "risk-sim": risk_sim_cli, "dg": dg_cli}


def invocations() -> list[tuple[str, str, list[str]]]:
    found = []
    for document in DOCUMENTS:
        for block, inline in CODE.findall(document.read_text()):
            for line in (block or inline).splitlines():
                for program, rest in INVOCATION.findall(line):
                    found.append((document.name, program, rest.split()))
    return found


def option_names(command: click.Command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    return names


def check(command: click.Command, words: list[str], program: str) -> list[str]:
    """Problems with ``program words``: unknown sub-commands or options."""
    path = [program]
    problems = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word.startswith("-"):
            name = word.split("=", 1)[0]
            if name not in option_names(command):
                problems.append(f"{' '.join(path)}: no option {name}")
            param = next((p for p in command.params if name in getattr(p, "opts", [])), None)
            if param is not None and not getattr(param, "is_flag", False) and "=" not in word \
                    and not getattr(param, "count", False):
                index += 1  # the option's value
            continue
        if isinstance(command, click.Group):
            sub = command.get_command(click.Context(command), word)
            if sub is None:
                problems.append(f"{' '.join(path)}: no sub-command {word!r}")
                return problems
            command = sub
            path.append(word)
            continue
        # an argument of a leaf command: the rest are its arguments and options
    if isinstance(command, click.Group) and len(path) > 1 and words[-1:] != ["--help"]:
        problems.append(f"{' '.join(path)}: a group, not a command")
    return problems


def test_the_documents_name_commands() -> None:
    named = {(program, words[0]) for _, program, words in invocations() if words}
    for program, sub in (("risk-sim", "demo"), ("risk-monitor", "audit"), ("dg", "dev"),
                         ("dg", "launch"), ("risk-monitor", "check-config")):
        assert (program, sub) in named, (program, sub)


@pytest.mark.parametrize("program", PROGRAMS)
def test_every_documented_command_exists(program: str) -> None:
    command = groups()[program]
    problems = [f"{where}: {problem}"
                for where, name, words in invocations() if name == program
                for problem in check(command, words, program)]
    assert not problems, problems

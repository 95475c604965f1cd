"""Every command-line example in the README and docs/ is one the command line takes (argument level, nothing run)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lib_codeformer.frontends.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"^(?:\S*/)?(?:codeformer|python3? -m lib_codeformer)(?:\s|$)")
BENCHMARK = re.compile(r"^(?:\S*/)?python3? (benchmarks/\S+\.py)")


def shell_commands(document: Path) -> list[str]:
    """The commands of the document's ``bash`` blocks: continuations joined, ``&&`` chains split, comments dropped."""
    commands = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", document.read_text(encoding="utf-8"), re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands += [part.strip() for part in line.split("&&")]
    return commands


EXAMPLES = [(document, command) for document in DOCUMENTS for command in shell_commands(document)]
CLI_EXAMPLES = [(d, c) for d, c in EXAMPLES if COMMAND.match(c)]
BENCHMARK_EXAMPLES = [(d, c) for d, c in EXAMPLES if BENCHMARK.match(c)]


def test_the_documents_have_examples():
    assert len(CLI_EXAMPLES) >= 10 and BENCHMARK_EXAMPLES


@pytest.mark.parametrize(("document", "command"), CLI_EXAMPLES, ids=[f"{d.name}: {c[:60]}" for d, c in CLI_EXAMPLES])
def test_every_command_line_example_parses(document, command):
    words = shlex.split(command)
    arguments = words[3:] if words[1:2] == ["-m"] else words[1:]
    try:
        build_parser().parse_args(arguments)
    except SystemExit as exited:  # --help and --version exit 0; a usage error exits 2
        assert exited.code == 0, f"{document.name}: {command}"


@pytest.mark.parametrize(("document", "command"), BENCHMARK_EXAMPLES, ids=[f"{d.name}: {c[:60]}" for d, c in BENCHMARK_EXAMPLES])
def test_every_benchmark_example_names_a_script_and_its_flags(document, command):
    words = shlex.split(command)
    script = ROOT / BENCHMARK.match(command).group(1)
    assert script.is_file(), f"{document.name}: {command}"
    source = script.read_text()
    for flag in (word for word in words if word.startswith("--")):
        assert f'"{flag}"' in source, f"{document.name}: {script.name} has no {flag}"

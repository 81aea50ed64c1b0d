import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    return re.findall(r"```bash\n# \((\d)\)[^\n]*\n([^\n]+)\n```", (ROOT / "README.md").read_text())


def test_readme_has_exactly_two_setup_commands():
    assert [n for n, _ in readme_commands()] == ["1", "2"]


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = dict(readme_commands())["2"]
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_indexes_folder_keeps_only_its_readme():
    lines = (ROOT / "indexes" / ".gitignore").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules == ["*", "!.gitignore", "!README.md"]

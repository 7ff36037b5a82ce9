"""The benchmark scripts in bench/: what their --help says they measure."""
from __future__ import annotations

import re

import pytest

from conftest import REPO_ROOT, run_python

SCRIPTS = sorted(path.name for path in (REPO_ROOT / "bench").glob("*.py") if "ArgumentParser(" in path.read_text())


def test_every_benchmark_script_is_checked():
    assert len(SCRIPTS) >= 20 and "speech.py" in SCRIPTS and "common.py" not in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_says_in_one_sentence_what_the_script_measures(script):
    """The descriptions were the docstrings' first lines, titles such as "Speech robustness benchmark:
    input level and background noise, where a codec trained on clean," (cut at the line's end), or
    whole docstrings that started with one."""
    result = run_python(REPO_ROOT / "bench" / script, "--help", text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    paragraphs = result.stdout.split("\n\n")
    description = " ".join(paragraphs[1].split())  # the one after the usage
    assert description.startswith("Measures ") and description.endswith("."), description
    assert not re.search(r"[.?!] +[A-Z]", description), f"more than one sentence: {description}"

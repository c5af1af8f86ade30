"""The README as a front door and the docs site: generated results that cannot go stale, a strict site build."""

import json
import os
import re
import runpy
import shutil
import subprocess
import sys

from tests.conftest import REPO

results = runpy.run_path(str(REPO / "docs" / "results.py"))  # docs/results.py: a script, not a package module


def copy_of_docs(tmp_path):
    for name in ("README.md", "docs/results.md", "data/evaluate/metrics.json", "data/train/metrics.json",
                 "data/classifier/report.json", "data/second_judge/report.json", "data/umap/report.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tmp_path / name)
    return tmp_path


def test_the_results_blocks_match_this_commits_data():
    assert results["main"](["--check"]) == 0, "run `python docs/results.py` after `dvc repro`"


def test_a_changed_metric_makes_the_blocks_stale_until_rewritten(tmp_path, capsys):
    root = copy_of_docs(tmp_path)
    metrics = root / "data" / "evaluate" / "metrics.json"
    m = json.loads(metrics.read_text())
    m["adherence_heldout"] += 0.1
    metrics.write_text(json.dumps(m))
    assert results["main"](["--check"], root=root) == 1
    assert "README.md, docs/results.md no longer match data/" in capsys.readouterr().err
    assert results["main"]([], root=root) == 0 and results["main"](["--check"], root=root) == 0
    assert f"**{100 * m['adherence_heldout']:.1f} %" in (root / "README.md").read_text()


def test_the_readme_is_a_front_door():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    for target in re.findall(r"\]\(((?!https?://)[^)#]+)", readme):  # every relative link resolves
        assert (REPO / target).exists(), target
    # the three commands of the contract
    for command in ('pip install -c constraints.txt -e ".[test]"', "dvc repro", "python -m pytest -q"):
        assert command in readme, command


def test_the_docs_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                            cwd=REPO, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "site" / "results" / "index.html").read_text(encoding="utf-8")
    adherence = json.loads((REPO / "data" / "evaluate" / "metrics.json").read_text())["adherence_heldout"]
    assert f"{100 * adherence:.1f} %" in page  # the generated block made it into the site
    assert (tmp_path / "site" / "usage" / "index.html").is_file() and (tmp_path / "site" / "cpu_grid.png").is_file()

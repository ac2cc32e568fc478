"""The import contracts of pyproject.toml hold (import-linter), and they can fail.

The layers are the architecture of docs/architecture.md; a change that breaks one fails CI
with the contract's name. The second test breaks a copy of the tree on purpose.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from architecture_diagram import mermaid  # noqa: E402


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "lint-imports is missing: pip install -r requirements-dev.txt"
    return subprocess.run(
        [lint, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_import_contracts_are_kept():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("core/common/boxes.py", "import streamlit", "never import Streamlit"),
        ("core/services/database.py", "import core.cli", "Layers:"),
        ("db/audit.py", "import core.services.jobs", "Layers:"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, line, contract):
    for part in ("core", "db", "pages"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / module).open("a") as f:
        f.write(f"\n{line}\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    broken = [ln for ln in result.stdout.splitlines() if ln.endswith("BROKEN")]
    assert any(contract in ln for ln in broken), result.stdout[-3000:]


def test_the_architecture_page_shows_the_import_graph_of_the_code():
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert mermaid() in page, (
        "docs/architecture.md is out of date: paste the output of "
        "`python scripts/architecture_diagram.py` into its import-graph section"
    )

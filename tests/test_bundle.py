"""The checked-in remote-code bundle in `modeling/` is exactly what `src/` would generate."""

import ast
from pathlib import Path

import pytest

from omnisift_hf.bundle import REMOTE_CODE_FILES, write_remote_code

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", REMOTE_CODE_FILES)
def test_bundle_matches_src(tmp_path, name):
    write_remote_code(tmp_path)
    checked_in = ROOT / "modeling" / name
    assert checked_in.exists(), f"modeling/{name} is missing: run `python -m omnisift_hf.bundle modeling`"
    assert checked_in.read_text() == (tmp_path / name).read_text(), (
        f"modeling/{name} drifted from src/omnisift_hf/{name}: run `python -m omnisift_hf.bundle modeling`"
    )


@pytest.mark.parametrize("name", REMOTE_CODE_FILES)
def test_bundle_imports_only_torch_transformers_and_itself(name):
    tree = ast.parse((ROOT / "modeling" / name).read_text())
    allowed = {"torch", "transformers", "huggingface_hub", "dataclasses", "math", "typing"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: must name a file of the bundle
                assert f"{node.module}.py" in REMOTE_CODE_FILES
                continue
            roots = {node.module.split(".")[0]}
        else:
            continue
        assert roots <= allowed, f"modeling/{name} imports {roots - allowed}"

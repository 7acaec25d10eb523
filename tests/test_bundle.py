"""The checked-in remote-code bundles in `modeling/` are exactly what `src/` generates, and import nothing else."""

import ast

import pytest
from helpers import BUNDLE_DIR, REMOTE_CODE_FILES, ROOT

from omnisift_hf.remote_code import BANNER, remote_code_files
from omnisift_hf.tools.bundle import backbone_bundles, write_bundles


def test_one_bundle_folder_per_backbone():
    assert set(backbone_bundles()) == {"qwen2_5_omni", "qwen3_omni_moe"}
    assert sorted(path.name for path in (ROOT / "modeling").iterdir()) == ["qwen2_5_omni", "qwen3_omni_moe"]
    assert REMOTE_CODE_FILES == (
        "_shared_configuration.py",
        "_shared_modeling.py",
        "attention_policy.py",
        "compression.py",
        "configuration_omnisift.py",
        "modeling_omnisift.py",
        "remote_code.py",
        "selector.py",
    )


@pytest.mark.parametrize("name", REMOTE_CODE_FILES)
def test_bundle_matches_src(tmp_path, name):
    write_bundles(tmp_path)
    checked_in = BUNDLE_DIR / name
    assert checked_in.exists(), (
        f"modeling/qwen2_5_omni/{name} is missing: run `python -m omnisift_hf.tools.bundle modeling`"
    )
    assert checked_in.read_text() == (tmp_path / "qwen2_5_omni" / name).read_text(), (
        f"modeling/qwen2_5_omni/{name} drifted from src/: run `python -m omnisift_hf.tools.bundle modeling`"
    )
    assert checked_in.read_text().startswith(BANNER)


@pytest.mark.parametrize("name", REMOTE_CODE_FILES)
def test_bundle_imports_only_torch_transformers_and_itself(name):
    tree = ast.parse((BUNDLE_DIR / name).read_text())
    allowed = {
        "torch",
        "transformers",
        "huggingface_hub",
        "dataclasses",
        "math",
        "typing",
        "collections",
        "copy",
        "os",
        "re",
        "ast",
        "pathlib",
        "sys",
        "threading",
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: must be a single dot and name a file of the bundle
                assert node.level == 1 and f"{node.module}.py" in REMOTE_CODE_FILES
                continue
            roots = {node.module.split(".")[0]}
        else:
            continue
        assert roots <= allowed, f"modeling/qwen2_5_omni/{name} imports {roots - allowed}"


def test_regenerating_from_the_flat_bundle_is_a_fixed_point():
    """A model loaded with trust_remote_code saves the same files again (banner once, imports already flat)."""
    again = remote_code_files(BUNDLE_DIR / "modeling_omnisift.py")
    assert again == {name: (BUNDLE_DIR / name).read_text() for name in REMOTE_CODE_FILES}


def test_selector_and_compression_import_without_transformers():
    """The vLLM plugin imports the selection without transformers' Qwen2.5 modelling code."""
    for name in ("compression.py", "selector.py"):
        tree = ast.parse((ROOT / "src" / "omnisift_hf" / name).read_text())
        roots = {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and not node.level
        } | {
            alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        }
        assert "transformers" not in roots, name

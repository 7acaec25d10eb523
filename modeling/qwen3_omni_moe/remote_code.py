# Generated from the omnisift_hf package by `python -m omnisift_hf.tools.bundle`: do not edit this copy; edit
# the module of the same name in src/omnisift_hf/ and regenerate.
"""The remote-code bundle of a backbone: the self-contained, flat files a saved OmniSIFT directory (and its Hub repo)
receives, so that `trust_remote_code=True` loads it where `omnisift_hf` is not installed.

A backbone's modelling module and every module it reaches through relative imports (its configuration,
`compression.py`, `selector.py`, this file) are written side by side, their relative imports rewritten to the flat
form (`from ...compression import x` -> `from .compression import x`) under a "generated, do not edit" banner.
transformers' own copying (`custom_object_save`) handles only single-dot imports of files in the same folder, which
the one-folder-per-backbone layout does not have. Standard library only: this file is part of every bundle.
"""

import ast
import os
import re
from pathlib import Path

__all__ = ["BANNER", "class_reference", "remote_code_files", "write_remote_code"]

BANNER = (
    "# Generated from the omnisift_hf package by `python -m omnisift_hf.tools.bundle`: do not edit this copy; edit\n"
    "# the module of the same name in src/omnisift_hf/ and regenerate.\n"
)
_RELATIVE_FROM = re.compile(r"^(\s*from\s+)\.+(?:[A-Za-z_][\w.]*\.)?([A-Za-z_]\w*)(\s+import\b)", re.MULTILINE)


def _relative_imports(path: Path) -> list[Path]:
    """The files of the modules `path` imports relatively (`from .x import`, `from ...x.y import`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    files = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.module is None:
                raise ValueError(f"{path}: `from {'.' * node.level} import ...` is not supported in remote code.")
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            files.append(base.joinpath(*node.module.split(".")).with_suffix(".py"))
    return files


def remote_code_files(module_file: str | os.PathLike) -> dict[str, str]:
    """The bundle rooted at `module_file`: file name -> text, for it and every module it reaches relatively.

    Raises:
        `ValueError`: two reached modules share a file name (they would overwrite each other in a flat folder).
    """
    pending, sources = [Path(module_file).resolve()], {}
    while pending:
        path = pending.pop()
        if path.name in sources:
            if sources[path.name] != path:
                raise ValueError(f"Remote code: {path} and {sources[path.name]} would both be saved as {path.name}.")
            continue
        sources[path.name] = path
        pending.extend(file.resolve() for file in _relative_imports(path))
    files = {}
    for name, path in sorted(sources.items()):
        text = path.read_text(encoding="utf-8")
        text = text.removeprefix(BANNER)  # a bundle saved again from remote code
        files[name] = BANNER + _RELATIVE_FROM.sub(r"\1.\2\3", text)
    return files


def write_remote_code(directory: str | os.PathLike, module_file: str | os.PathLike) -> list[Path]:
    """Write the bundle rooted at `module_file` into `directory` (created if needed); return the written paths."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in remote_code_files(module_file).items():
        (target / name).write_text(text, encoding="utf-8")
        written.append(target / name)
    return written


def class_reference(cls: type) -> str:
    """`module.Class`: how `auto_map` names a class of the remote-code files saved next to config.json."""
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"

"""Which pqd source files a job runs, found from its imports, and their hash (torch-free).

A job's code hash goes into its Snakemake ``params``, so editing the code it runs reruns it
(and, through its outputs, everything after it), and editing code it does not run does not.
The files are not listed by hand: they are the *import closure* of the job's entry modules,
read statically from the sources (every ``import`` and ``from ... import`` of a ``pqd`` module,
at module level or inside a function, plus the packages that contain them). Modules that pqd
imports by name at run time (a stage's module, a backbone, a dataset loader, a runtime; see
:mod:`pqd.catalog` and :class:`pqd.pipeline.StageSpec`) are given as extra entry modules by the
rule that runs them. A backbone built by a module outside pqd (``BackboneSpec.builder``) counts
too: a Python file of the workflow directory by its contents and those of the local modules it
imports, so editing a user's model file reruns exactly the jobs that build that model; a
module of an installed package by the package's name and version. The CLI checks at the end of every job that each ``pqd`` module it loaded
is in the closure it was hashed with (:func:`untracked`), so a new import that escapes the
hash fails the job instead of leaving a stale cache.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional

ROOT = Path(__file__).resolve().parent  # the pqd package
PACKAGE = ROOT.name
# Run by every job as ``python -m pqd <command>``: their own imports are all lazy, one per
# command, so only their module-level imports count.
ENTRY = ("pqd", "pqd.__main__", "pqd.cli")


def module_file(name: str, root: Path = ROOT) -> Optional[Path]:
    """Source file of module ``name`` (``pqd.x.y``) under ``root``, or None if there is none."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _imports(name: str, shallow: bool, root: Path) -> set[str]:
    """``pqd`` modules that module ``name`` imports (``shallow``: module-level statements only)."""
    path = module_file(name, root)
    if path is None:
        return set()
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if shallow else ast.walk(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # kept only when it is a module
    return {m for m in found if m.split(".")[0] == PACKAGE}


@lru_cache(maxsize=None)
def closure(roots: tuple[str, ...], root: Path = ROOT) -> tuple[str, ...]:
    """Every ``pqd`` module reachable by imports from ``roots`` and from the module-level imports
    of :data:`ENTRY`, with the packages that contain them, sorted."""
    seen: set[str] = set()
    todo = list(roots)
    for entry in ENTRY:
        seen.update(m for m in _with_parents(entry) if module_file(m, root))
        todo.extend(_imports(entry, shallow=True, root=root))
    while todo:
        for mod in _with_parents(todo.pop()):
            if mod not in seen and module_file(mod, root) is not None:
                seen.add(mod)
                todo.extend(_imports(mod, shallow=False, root=root))
    return tuple(sorted(seen))


def local_file(name: str, bases: Iterable[Path]) -> Optional[Path]:
    """The source file of module ``name`` under the first of ``bases`` that has it, or None."""
    for base in bases:
        stem = base.joinpath(*name.split("."))
        for candidate in (stem.with_suffix(".py"), stem / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def user_bases() -> tuple[Path, ...]:
    """Where a user's model module is looked for, as the jobs import it: the working directory
    (``python -m`` puts it first on sys.path), then the workflow's own folder (on PYTHONPATH)."""
    return (Path.cwd(), ROOT.parent)


def external_fingerprint(name: str, bases: Optional[Iterable[Path]] = None) -> list[tuple[str, bytes]]:
    """What identifies the code of module ``name`` outside pqd: for a file of the workflow directory,
    its contents and those of every local module it imports (transitively); for an installed
    package, its distribution name and version."""
    bases = tuple(bases or user_bases())
    first = local_file(name, bases)
    if first is None:
        from importlib import metadata

        top = name.split(".")[0]
        dists = metadata.packages_distributions().get(top, [])
        versions = sorted(f"{d}=={metadata.version(d)}" for d in dists)
        return [(f"package:{top}", ",".join(versions or ["not installed"]).encode())]
    out, seen, todo = [], set(), [name]
    while todo:
        mod = todo.pop()
        path = local_file(mod, bases)
        if mod in seen or path is None:
            continue
        seen.add(mod)
        out.append((f"file:{mod}", path.read_bytes()))
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                todo.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: max(0, len(package.split(".")) - node.level + 1)]
                    base = ".".join(anchor + ([base] if base else []))
                todo.append(base)
                todo.extend(f"{base}.{a.name}" for a in node.names)
    return sorted(out)


def code_hash(roots: Iterable[str], root: Path = ROOT) -> str:
    """Hash of the names and contents of the files in the import closure of ``roots`` (pqd modules),
    plus the :func:`external_fingerprint` of roots outside pqd."""
    roots = sorted(set(roots))
    h = hashlib.sha256()
    for mod in closure(tuple(r for r in roots if r.split(".")[0] == PACKAGE), root):
        path = module_file(mod, root)
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes())
    for ext in (r for r in roots if r.split(".")[0] != PACKAGE):
        for label, content in external_fingerprint(ext):
            h.update(label.encode() + b"\0" + content)
    return h.hexdigest()[:16]


def untracked(loaded: Iterable[str], roots: Iterable[str]) -> list[str]:
    """The loaded ``pqd`` modules outside the closure of ``roots`` (should be none)."""
    tracked = set(closure(tuple(sorted(set(roots)))))
    return sorted(m for m in loaded if m.split(".")[0] == PACKAGE and module_file(m) and m not in tracked)

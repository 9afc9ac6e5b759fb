"""Packaging: every package ships, and the board templates are the virsim.board_templates package."""

from __future__ import annotations

import fnmatch
import sys
from importlib import resources
from pathlib import Path

import pytest

from virsim.board import list_templates

from conftest import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

SRC = ROOT / "src"
BOARDS = ROOT / "boards"


def setuptools_config() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["tool"]["setuptools"]


def source_packages() -> set[str]:
    return {".".join(init.parent.relative_to(SRC).parts) for init in (SRC / "virsim").rglob("__init__.py")}


def test_every_package_under_src_is_listed() -> None:
    packages = set(setuptools_config()["packages"])
    found = source_packages()
    assert {"virsim", "virsim.cli", "virsim.daemon"} <= found
    missing = found - packages
    assert not missing, f"packages missing from [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_every_listed_package_exists() -> None:
    config = setuptools_config()
    package_dir = config.get("package-dir", {})
    for name in config["packages"]:
        if name in package_dir:
            folder = ROOT / package_dir[name]
        else:
            folder = ROOT / package_dir.get("", ".") / name.replace(".", "/")
        assert (folder / "__init__.py").is_file(), f"{name} is listed but {folder} is not a package"


def test_no_source_folder_without_init() -> None:
    # A folder of modules without __init__.py would be left out of the wheel silently.
    for folder in (SRC / "virsim").rglob("*"):
        if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py")):
            assert (folder / "__init__.py").is_file(), f"{folder} has modules but no __init__.py"


def test_board_templates_package_is_the_boards_directory() -> None:
    assert setuptools_config()["package-dir"]["virsim.board_templates"] == "boards"
    folder = resources.files("virsim.board_templates")
    shipped = {entry.name for entry in folder.iterdir() if entry.name.endswith((".yaml", ".yml", ".json"))}
    in_repo = {p.name for p in BOARDS.iterdir() if p.suffix in (".yaml", ".yml", ".json")}
    assert shipped == in_repo
    assert "mps2-an385.yaml" in shipped
    for name in in_repo:
        assert folder.joinpath(name).read_text() == (BOARDS / name).read_text()


def test_board_templates_are_package_data() -> None:
    # Every template file matches a package-data glob, or a wheel would ship the package empty.
    globs = setuptools_config()["package-data"]["virsim.board_templates"]
    for path in BOARDS.iterdir():
        if path.name == "__init__.py" or path.name == "__pycache__":
            continue
        assert any(fnmatch.fnmatch(path.name, g) for g in globs), f"{path.name} matches none of {globs}"


def test_templates_load_through_importlib_resources() -> None:
    names = {Path(p.name).stem for p in BOARDS.glob("*.yaml")}
    assert set(list_templates()) == names


def test_py_typed_ships() -> None:
    assert "py.typed" in setuptools_config()["package-data"]["virsim"]
    assert (SRC / "virsim" / "py.typed").is_file()


def test_every_file_a_package_reads_is_package_data() -> None:
    # Files beside the modules that virsim reads at run time (QEMU plugin sources it compiles,
    # Renode's C# extension) must match a package-data glob of their package, or a wheel lacks them.
    data = setuptools_config()["package-data"]
    for path in (SRC / "virsim").rglob("*"):
        if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        package = ".".join(path.parent.relative_to(SRC).parts)
        globs = data.get(package, [])
        assert any(fnmatch.fnmatch(path.name, g) for g in globs), f"{path} matches no package-data glob of {package}"

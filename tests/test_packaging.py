"""The plugin zip for plugins.qgis.org: built by build.py, checked against the repository's upload rules we can run offline."""

from __future__ import annotations

import configparser
import importlib.util
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = "hsr_diff_plugin"


def _build_module():
    spec = importlib.util.spec_from_file_location("hsr_diff_build", ROOT / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


build = _build_module()


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory) -> Path:
    return build.package(tmp_path_factory.mktemp("dist"))


def _variant(src: Path, dst: Path, drop: tuple[str, ...] = (), add: dict[str, bytes] | None = None,
             replace: dict[str, bytes] | None = None, stored: bool = False) -> Path:
    """A copy of the zip ``src`` without the names ``drop``, with ``replace``d contents and ``add``ed entries (appended)."""
    replace = replace or {}
    with (zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as zout,
          warnings.catch_warnings()):
        warnings.filterwarnings("ignore", "Duplicate name", UserWarning)
        for name in zin.namelist():
            if name not in drop:
                zout.writestr(name, replace.get(name, zin.read(name)))
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


def test_zip_passes_the_repository_rules(plugin_zip):
    assert plugin_zip.name == f"{TOP}-{build.plugin_version()}.zip" and not list(plugin_zip.parent.glob("*.partial"))
    assert build.validate_zip(plugin_zip) == []
    assert plugin_zip.stat().st_size < 25_000_000
    with zipfile.ZipFile(plugin_zip) as zf:
        names = zf.namelist()
        assert len(names) == len(set(names)), "a name is in the zip twice"
        assert {n.split("/")[0] for n in names} == {TOP}
        assert [n for n in names if n.endswith("metadata.txt")] == [f"{TOP}/metadata.txt"]
        assert zf.read(f"{TOP}/metadata.txt") == (ROOT / TOP / "metadata.txt").read_bytes()
        licence = zf.read(f"{TOP}/LICENSE").decode()
        assert licence == (ROOT / "LICENSE").read_text()
        meta = configparser.ConfigParser(interpolation=None)
        meta.optionxform = str
        meta.read_string(zf.read(f"{TOP}/metadata.txt").decode())
        icon = meta["general"]["icon"]
        assert f"{TOP}/{icon}" in names
    for field in ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository", "tracker"):
        assert meta["general"].get(field, "").strip(), field
    assert meta["general"]["qgisMinimumVersion"] == "3.22" and meta["general"]["hasProcessingProvider"] == "yes"
    # GPL-2.0-or-later, with the full standard text, and the data section.
    assert "either version 2 of the License, or (at your option) any later\nversion" in licence
    assert "GNU GENERAL PUBLIC LICENSE\n                       Version 2, June 1991" in licence
    assert "END OF TERMS AND CONDITIONS" in licence and "(c) DLR" in licence
    # Binaries only in models/: the bundled ONNX files, nothing compiled, no .pyc or __pycache__.
    onnx = sorted(n for n in names if n.endswith(".onnx"))
    assert onnx == sorted(f"{TOP}/models/{p.name}" for p in (ROOT / "models").glob("*.onnx"))
    for n in names:
        assert not n.endswith((".pyc", ".pyo", ".so", ".dll", ".dylib", ".exe")) and "__pycache__" not in n and "/tests/" not in n, n


def test_zip_has_the_checkout_plugin_files(plugin_zip):
    with zipfile.ZipFile(plugin_zip) as zf:
        names = set(zf.namelist())
    for pkg in (TOP, "core", "export"):
        for src in (ROOT / pkg).rglob("*.py"):
            if "__pycache__" in src.parts:
                continue
            rel = src.relative_to(ROOT / TOP) if pkg == TOP else src.relative_to(ROOT)
            assert f"{TOP}/{rel.as_posix()}" in names, rel
    assert {f"{TOP}/README.md", f"{TOP}/LICENSE", f"{TOP}/__init__.py"} <= names
    assert not (ROOT / "metadata.txt").exists(), "one metadata.txt, in the plugin folder"


def test_validator_finds_each_problem(plugin_zip, tmp_path):
    elf = Path(sys.executable).resolve().read_bytes()[:4096]
    meta = (ROOT / TOP / "metadata.txt").read_text()
    cases = {
        "duplicate": (dict(add={f"{TOP}/metadata.txt": meta.encode()}), f"{TOP}/metadata.txt is in the zip 2 times"),
        "no_licence": (dict(drop=(f"{TOP}/LICENSE",)), f"{TOP}/LICENSE is missing"),
        "no_init": (dict(drop=(f"{TOP}/__init__.py",)), f"{TOP}/__init__.py is missing"),
        "pyc": (dict(add={f"{TOP}/plugin.cpython-311.pyc": b"\x00"}), "compiled Python"),
        "pycache": (dict(add={f"{TOP}/__pycache__/x.txt": b"x"}), "forbidden folder __pycache__"),
        "macosx": (dict(add={f"{TOP}/__MACOSX/x.txt": b"x"}), "forbidden folder __MACOSX"),
        "two_tops": (dict(add={"other/x.py": b""}), "exactly one top folder"),
        "model_elsewhere": (dict(add={f"{TOP}/core/m.onnx": b"\x08\x08"}), "a model outside models/"),
        "shared_library": (dict(add={f"{TOP}/export/libfast.so": elf}), "file type .so is not allowed"),
        "binary_as_py": (dict(add={f"{TOP}/export/fast.py": elf}), "compiled code"),
        "no_tracker": (dict(replace={f"{TOP}/metadata.txt": "\n".join(
            line for line in meta.splitlines() if not line.startswith("tracker=")).encode()}), "required field tracker"),
        "bad_url": (dict(replace={f"{TOP}/metadata.txt": meta.replace("repository=https://", "repository=").encode()}),
                    "repository is not a URL"),
        "no_icon": (dict(drop=(f"{TOP}/icons/hsrdiff.svg",)), "icon icons/hsrdiff.svg is not in the zip"),
    }
    for case, (how, expected) in cases.items():
        bad = _variant(plugin_zip, tmp_path / f"{case}.zip", **how)
        problems = build.validate_zip(bad)
        assert any(expected in p for p in problems), (case, problems)
    big = _variant(plugin_zip, tmp_path / "big.zip", add={f"{TOP}/models/big.onnx": bytes(25_000_000)}, stored=True)
    assert any("over the 25 MB limit" in p for p in build.validate_zip(big))


def test_package_refuses_an_invalid_zip(tmp_path, monkeypatch):
    """A zip that breaks a rule is not left behind: here the licence is missing from the tree."""
    monkeypatch.setattr(build, "PACKAGED_FILES", ["README.md"])
    with pytest.raises(SystemExit, match="LICENSE is missing"):
        build.package(tmp_path)
    assert list(tmp_path.iterdir()) == []

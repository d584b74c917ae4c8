#!/usr/bin/env python3
"""One entry point for hsr-diff: ``setup``, ``test``, ``package``, ``demo``, ``lint``.

``python3 build.py setup`` is idempotent: it installs Debian's QGIS and GDAL packages when
missing (as root; otherwise it prints the apt command), makes ``.venv`` from
``/usr/bin/python3 --system-site-packages`` (so QGIS, GDAL, PyQt5 and Debian's numpy are
seen) and installs ``requirements.txt`` with numpy held at Debian's version. A re-run with
everything in place takes seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_PY = VENV / "bin" / "python"
SYSTEM_PY = "/usr/bin/python3"
APT_PACKAGES = ["qgis", "python3-qgis", "qgis-providers", "python3-gdal", "gdal-bin", "python3-venv", "python3-matplotlib", "xvfb"]
PLUGIN = "hsr_diff_plugin"
# The one metadata.txt: QGIS reads it from the plugin folder, in a checkout (QGIS_PLUGINPATH=<repo>) and in the zip.
PLUGIN_METADATA = ROOT / PLUGIN / "metadata.txt"
# What goes into the plugin zip next to the plugin's own files: the science packages, the bundled models and the
# docs (help pages); and from the repository root the licence and the README.
PACKAGED_PACKAGES = ["core", "export", "models", "docs"]
PACKAGED_FILES = ["LICENSE", "README.md"]
# plugins.qgis.org's upload rules (qgis/QGIS-Django, plugins/validator.py) and what the plugin zip may hold.
ZIP_MAX_BYTES = 25_000_000
METADATA_REQUIRED = ("name", "description", "version", "qgisMinimumVersion", "author", "email", "about", "tracker", "repository")
ZIP_TEXT_SUFFIXES = {".py", ".md", ".txt", ".csv", ".svg", ".json", ".yaml", ".yml", ".qml", ".ts", ".html", ".css", ".model3", ""}
ZIP_RESOURCE_SUFFIXES = {".png", ".qm"}  # icons and compiled Qt translations, the binaries QGIS plugins carry
_MACHO = {b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe"}


def log(msg: str) -> None:
    print(f"[build] {msg}", flush=True)


def run(cmd: list[str], **kw) -> None:
    log(" ".join(str(c) for c in cmd))
    subprocess.run(cmd, check=True, **kw)


def missing_apt_packages() -> list[str]:
    missing = []
    for pkg in APT_PACKAGES:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
        if "install ok installed" not in r.stdout:
            missing.append(pkg)
    return missing


def ensure_system_packages() -> None:
    missing = missing_apt_packages()
    if not missing:
        return
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if os.geteuid() != 0:
        sys.exit(f"[build] missing Debian packages; run as root:\n  apt-get update && {' '.join(cmd)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-q"], env=env)
    run(cmd, env=env)


def system_numpy_version() -> str:
    out = subprocess.run([SYSTEM_PY, "-c", "import numpy; print(numpy.__version__)"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def ensure_venv() -> None:
    if not VENV_PY.exists():
        run([SYSTEM_PY, "-m", "venv", "--system-site-packages", str(VENV)])
    reqs = (ROOT / "requirements.txt").read_bytes()
    numpy_version = system_numpy_version()
    stamp = VENV / ".requirements.sha256"
    digest = hashlib.sha256(reqs + numpy_version.encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    # Hold numpy at Debian's version: numpy 2 breaks the GDAL and QGIS bindings.
    constraints = VENV / "constraints.txt"
    constraints.write_text(f"numpy=={numpy_version}\n")
    run([str(VENV_PY), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-r", str(ROOT / "requirements.txt"), "-c", str(constraints)])
    stamp.write_text(digest)


def setup() -> None:
    ensure_system_packages()
    ensure_venv()
    log("environment ready: " + str(VENV_PY))


def test_env() -> dict:
    env = dict(os.environ)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 2))
    return env


def test(extra: list[str]) -> int:
    setup()
    cmd = [str(VENV_PY), "-m", "pytest", "-q", "-ra", "tests", *extra]
    log(" ".join(cmd))
    rc = subprocess.run(cmd, cwd=ROOT, env=test_env()).returncode
    if rc == 5:
        log("pytest collected no tests")
        return 1
    return rc


def plugin_version() -> str:
    for line in PLUGIN_METADATA.read_text().splitlines():
        if line.startswith("version="):
            return line.split("=", 1)[1].strip()
    raise SystemExit(f"{PLUGIN_METADATA} has no version=")


def _skip(path: Path) -> bool:
    return any(part in {"__pycache__", ".pytest_cache", "tests"} for part in path.parts) or path.suffix in {".pyc", ".pyo"}


def zip_entries() -> list[tuple[Path, str]]:
    """``(source file, name in the zip)`` of everything the plugin zip holds, each name once.

    The plugin folder (its ``metadata.txt`` included), ``LICENSE`` and ``README.md`` beside it, and
    :data:`PACKAGED_PACKAGES` inside it. Raises ``SystemExit`` naming a name that two sources claim.
    """
    entries = [(src, f"{PLUGIN}/{src.relative_to(ROOT / PLUGIN).as_posix()}")
               for src in sorted((ROOT / PLUGIN).rglob("*")) if src.is_file() and not _skip(src.relative_to(ROOT))]
    entries += [(ROOT / name, f"{PLUGIN}/{name}") for name in PACKAGED_FILES if (ROOT / name).exists()]
    for pkg in PACKAGED_PACKAGES:
        entries += [(src, f"{PLUGIN}/{src.relative_to(ROOT).as_posix()}")
                    for src in sorted((ROOT / pkg).rglob("*")) if src.is_file() and not _skip(src.relative_to(ROOT))]
    seen: dict[str, Path] = {}
    for src, name in entries:
        if name in seen:
            raise SystemExit(f"[build] {name} would be in the zip twice ({seen[name]} and {src})")
        seen[name] = src
    return entries


def validate_zip(path: Path) -> list[str]:
    """The problems plugins.qgis.org's upload validator (or its policy) would find in the plugin zip ``path``; [] when none.

    The offline part of the repository's checks: size at most 25 MB; a readable zip; one top folder,
    a valid Python identifier; no absolute or ``..`` names, no ``.pyc``, no ``__MACOSX`` / ``.git`` /
    ``__pycache__``; ``__init__.py``, ``metadata.txt`` and ``LICENSE`` in the top folder;
    ``metadata.txt`` with a ``[general]`` section and the required fields, an author without
    slashes, URLs with a scheme and a host, booleans as ``True``/``False``, an icon that is in the
    zip. And the plugin's own rules: no name twice, no compiled code (ELF, PE, Mach-O), files only
    of :data:`ZIP_TEXT_SUFFIXES` or :data:`ZIP_RESOURCE_SUFFIXES`, ``.onnx`` models only in ``models/``.
    (Whether the URLs answer is checked online at upload.)
    """
    import configparser
    import re
    from urllib.parse import urlparse

    problems: list[str] = []
    size = path.stat().st_size
    if size > ZIP_MAX_BYTES:
        problems.append(f"the zip is {size / 1e6:.1f} MB, over the {ZIP_MAX_BYTES / 1e6:.0f} MB limit")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        return problems + [f"not a zip file ({exc})"]
    with zf:
        names = zf.namelist()
        bad = zf.testzip()
        if bad:
            problems.append(f"{bad}: bad CRC")
        dups = sorted({n for n in names if names.count(n) > 1})
        problems += [f"{n} is in the zip {names.count(n)} times" for n in dups]
        tops = sorted({n.split("/")[0] for n in names})
        if len(tops) != 1 or not any("/" in n for n in names):
            return problems + [f"the zip must hold exactly one top folder, not {tops}"]
        top = tops[0]
        if not (top.isidentifier() and re.match(r"^[A-Za-z][A-Za-z0-9-_]+$", top)):
            problems.append(f"top folder {top!r} is not a valid Python identifier")
        for n in names:
            parts = n.split("/")
            if n.startswith("/") or "\\" in n or ".." in parts:
                problems.append(f"{n}: path information (absolute, backslash or ..)")
            if ".pyc" in n:
                problems.append(f"{n}: compiled Python")
            problems += [f"{n}: forbidden folder {d}" for d in ("__MACOSX", ".git", "__pycache__") if d in parts]
            if n.endswith("/"):
                continue
            suffix = Path(n).suffix.lower()
            if suffix == ".onnx":
                if parts[1] != "models":
                    problems.append(f"{n}: a model outside models/")
            elif suffix not in ZIP_TEXT_SUFFIXES | ZIP_RESOURCE_SUFFIXES:
                problems.append(f"{n}: file type {suffix or '(none)'} is not allowed in the plugin zip")
            head = zf.read(n)[:4]
            if head[:4] == b"\x7fELF" or head[:2] == b"MZ" or head[:4] in _MACHO:
                problems.append(f"{n}: compiled code (a binary executable or library)")
        for required in ("__init__.py", "metadata.txt", "LICENSE"):
            if f"{top}/{required}" not in names:
                problems.append(f"{top}/{required} is missing")
        if f"{top}/metadata.txt" not in names:
            return problems
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str
        try:
            parser.read_string(zf.read(f"{top}/metadata.txt").decode("utf-8"))
        except (configparser.Error, UnicodeDecodeError) as exc:
            return problems + [f"metadata.txt cannot be parsed ({exc})"]
        if not parser.has_section("general"):
            return problems + ["metadata.txt has no [general] section"]
        meta = dict(parser.items("general"))
        problems += [f"metadata.txt: required field {f} is missing or empty" for f in METADATA_REQUIRED if not meta.get(f, "").strip()]
        if "/" in meta.get("author", ""):
            problems.append("metadata.txt: author contains a slash")
        for key in ("repository", "tracker", "homepage"):
            if key in meta:
                url = urlparse(meta[key].strip())
                if not (url.scheme and url.netloc) or meta[key].strip() in ("http://repo", "http://bugs", "http://homepage"):
                    problems.append(f"metadata.txt: {key} is not a URL ({meta[key]!r})")
        for key in ("experimental", "deprecated", "server", "supportsQt6"):
            if key in meta and meta[key].strip().lower() not in ("true", "false", "1", "0"):
                problems.append(f"metadata.txt: {key} must be True or False, not {meta[key]!r}")
        icon = meta.get("icon", "").strip().removeprefix("./")
        if icon and f"{top}/{icon}" not in names:
            problems.append(f"metadata.txt: icon {icon} is not in the zip")
    return problems


def package(dist: Path = ROOT / "dist") -> Path:
    """Build ``<dist>/hsr_diff_plugin-<version>.zip`` for QGIS's "Install from ZIP" and plugins.qgis.org.

    Written to a ``.partial`` file and renamed when complete; a zip that :func:`validate_zip`
    rejects is removed and the problems raised as ``SystemExit``.
    """
    dist.mkdir(parents=True, exist_ok=True)
    out = dist / f"{PLUGIN}-{plugin_version()}.zip"
    tmp = out.with_suffix(".zip.partial")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for src, name in zip_entries():
                zf.write(src, name)
        problems = validate_zip(tmp)
        if problems:
            raise SystemExit("[build] the plugin zip is not valid:\n  " + "\n  ".join(problems))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return out


def demo(extra: list[str]) -> int:
    setup()
    demo_py = ROOT / "examples" / "demo.py"
    if not demo_py.exists():
        print("demo: not yet - the bundled model and sample land with the demo issue")
        return 0
    return subprocess.run([str(VENV_PY), str(demo_py), *extra], cwd=ROOT, env=test_env()).returncode


def lint() -> int:
    setup()
    return subprocess.run([str(VENV_PY), "-m", "ruff", "check", "."], cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        print("usage: python3 build.py {setup|test|package|demo|lint} [args...]")
        return 0
    cmd, extra = argv[0], argv[1:]
    if cmd == "setup":
        setup()
        return 0
    if cmd == "test":
        return test(extra)
    if cmd == "package":
        package()
        return 0
    if cmd == "demo":
        return demo(extra)
    if cmd == "lint":
        return lint()
    if cmd == "clean":
        shutil.rmtree(ROOT / "dist", ignore_errors=True)
        return 0
    print(f"unknown command {cmd!r}; use setup, test, package, demo or lint", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

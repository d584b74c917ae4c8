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
APT_PACKAGES = ["qgis", "python3-qgis", "qgis-providers", "python3-gdal", "gdal-bin", "python3-venv", "python3-matplotlib"]
PLUGIN = "hsr_diff_plugin"
# What goes into the plugin zip next to the plugin's own files: the science packages and the bundled models.
PACKAGED_PACKAGES = ["core", "export", "models"]


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
    for line in (ROOT / "metadata.txt").read_text().splitlines():
        if line.startswith("version="):
            return line.split("=", 1)[1].strip()
    raise SystemExit("metadata.txt has no version=")


def _skip(path: Path) -> bool:
    return any(part in {"__pycache__", ".pytest_cache", "tests"} for part in path.parts) or path.suffix in {".pyc", ".pyo"}


def package() -> Path:
    """Build ``dist/hsr_diff_plugin-<version>.zip`` for QGIS's "Install from ZIP"."""
    dist = ROOT / "dist"
    dist.mkdir(exist_ok=True)
    out = dist / f"{PLUGIN}-{plugin_version()}.zip"
    tmp = out.with_suffix(".zip.partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for src in sorted((ROOT / PLUGIN).rglob("*")):
            if src.is_file() and not _skip(src.relative_to(ROOT)):
                zf.write(src, f"{PLUGIN}/{src.relative_to(ROOT / PLUGIN)}")
        zf.write(ROOT / "metadata.txt", f"{PLUGIN}/metadata.txt")
        for name in ("LICENSE", "README.md"):
            if (ROOT / name).exists():
                zf.write(ROOT / name, f"{PLUGIN}/{name}")
        for pkg in PACKAGED_PACKAGES:
            for src in sorted((ROOT / pkg).rglob("*")):
                if src.is_file() and not _skip(src.relative_to(ROOT)):
                    zf.write(src, f"{PLUGIN}/{src.relative_to(ROOT)}")
    tmp.replace(out)
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

"""Run the real ``qgis_process`` with our plugin in a throwaway profile."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QGIS_PROCESS = "qgis_process.bin"  # Debian's qgis_process wrapper passes a flag 3.22 rejects


def qgis_env(profile: Path, plugin_path: Path = ROOT, pythonpath: str | None = None) -> dict:
    env = dict(os.environ)
    env.update(QT_QPA_PLATFORM="offscreen", XDG_DATA_HOME=str(profile), XDG_CONFIG_HOME=str(profile),
               XDG_RUNTIME_DIR=str(profile), QGIS_PLUGINPATH=str(plugin_path), GDAL_PAM_ENABLED="NO")
    # The embedded Python finds its prefix through the first python3 on PATH: keep Debian's first,
    # so a pyenv or venv interpreter earlier on PATH (as under `build.py test`) does not hijack it.
    env["PATH"] = os.pathsep.join(["/usr/bin", "/bin", env.get("PATH", "")])
    if pythonpath is None:
        env.pop("PYTHONPATH", None)
    else:
        env["PYTHONPATH"] = pythonpath
    return env


def qgis_process(args: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=timeout)


def enable_plugin(env: dict) -> None:
    r = qgis_process(["plugins", "enable", "hsr_diff_plugin"], env)
    assert "Enabled hsr_diff_plugin" in r.stdout, r.stdout + r.stderr


def run_algorithm(alg: str, params: dict, env: dict, timeout: int = 600) -> dict:
    """``qgis_process run ALG --json`` with ``params``; returns the parsed JSON (raises on failure)."""
    args = ["run", alg, "--json", "--"] + [f"{k}={v}" for k, v in params.items()]
    r = qgis_process(args, env, timeout)
    if r.returncode != 0:
        raise RuntimeError(f"qgis_process {alg} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return json.loads(r.stdout[r.stdout.index("{"):])

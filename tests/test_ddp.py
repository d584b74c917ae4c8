"""DDP with gloo on CPU: 2 processes, a few steps, identical replicas equal to a 1-process run."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg(npz, run_dir) -> dict:
    return {
        "name": "ddp", "run_dir": str(run_dir), "seed": 5, "device": "cpu", "threads": 1,
        "model": {"preset": "tiny"},
        "data": {"mode": "supervised", "hsi": str(npz), "scale": 4, "srf": "nikon_d700", "val_region": None},
        "loss": {"w_msi": 0.1, "w_lr": 0.1}, "optim": {"lr": 1e-3, "warmup": 1}, "ema": {"decay": 0.9},
        "stages": [{"steps": STEPS, "patch": 16, "batch": 4}],
        "log_every": 0, "val": {"every": 0}, "checkpoint": {"every": 0, "keep": 1},
    }


def _worker(rank: int, world: int, port: int, npz: str, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    from core.training.distributed import cleanup, init_distributed
    from core.training.trainer import Trainer

    ctx = init_distributed("cpu")
    assert ctx.enabled and ctx.world_size == world
    try:
        tr = Trainer(_cfg(npz, os.path.join(out, "run")), ctx=ctx)
        tr.run()
        save_file({k: v.contiguous() for k, v in tr.model.state_dict().items()}, os.path.join(out, f"rank{rank}.safetensors"))
    finally:
        cleanup()


@pytest.fixture(scope="module")
def cave_npz(shared_data, tmp_path_factory):
    from core.raster_io import read_raster

    cube, meta = read_raster(shared_data / "cave_balloons.tif")
    path = tmp_path_factory.mktemp("cave_ddp") / "crop.npz"
    np.savez(path, cube=cube[:, :64, :64], wavelengths=meta.wavelengths)
    return path


def test_gloo_ddp_two_processes_identical_and_equal_to_single(cave_npz, tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(cave_npz), str(tmp_path)), nprocs=2, join=True)
    w0 = load_file(str(tmp_path / "rank0.safetensors"))
    w1 = load_file(str(tmp_path / "rank1.safetensors"))
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    assert (tmp_path / "run" / "latest").exists()  # rank 0 wrote the checkpoint

    # the same global batch in one process gives the same weights (up to reduction order)
    from core.training.distributed import DistContext
    from core.training.trainer import Trainer

    torch.set_num_threads(1)
    single = Trainer(_cfg(cave_npz, tmp_path / "single"), ctx=DistContext())
    single.run()
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(v, w0[k], atol=1e-5, rtol=1e-4)


def test_torchrun_two_nodes_c10d_rendezvous(cave_npz, tmp_path):
    """2 "nodes" x 1 process on this machine: two torchrun agents meet through a c10d rendezvous on 127.0.0.1."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(json.dumps(_cfg(cave_npz, tmp_path / "run")))  # JSON is YAML
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    endpoint = f"127.0.0.1:{_free_port()}"
    nodes = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", endpoint, "--rdzv-id", "hsr-test", "--rdzv-conf", f"is_host={node == 0}", "--max-restarts", "0",
               "-m", "core.train", "--config", str(cfg)]
        nodes.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outs = [p.communicate(timeout=150)[0] for p in nodes]
    finally:
        for p in nodes:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in nodes] == [0, 0], "\n----\n".join(outs)
    log = "".join(outs)
    assert f"{STEPS} steps, device cpu, world 2" in log, log
    assert "replicas identical across 2 ranks: True" in log, log
    assert (tmp_path / "run" / "latest").exists()

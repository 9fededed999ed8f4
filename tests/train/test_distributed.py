"""Sharding equivalence on 8 simulated devices and a two-process run (subprocess scripts)."""

import json

import numpy as np

from tests.train import scripts


def test_meshes_agree_and_checkpoints_move_between_meshes(tmp_path):
    status, output = scripts.run("multidevice_check.py", tmp_path / "ckpt", timeout=600)
    lines = [line for line in output.splitlines() if line.startswith("{")]
    assert lines, output[-4000:]
    report = json.loads(lines[-1])
    for shape in ["(8, 1, 1)", "(2, 4, 1)", "(2, 2, 2)"]:
        assert report[shape]["loss_diff"] <= 1e-5, report[shape]
        assert report[shape]["param_diff"] <= 1e-5, report[shape]
    assert report["specs"] == {"q_proj": "P('fsdp', 'tensor')", "embedding": "P('tensor', 'fsdp')"}
    for target in ["(2, 2, 2)", "(1, 1, 1)"]:
        restored = report[f"restore->{target}"]
        assert restored["exact"] and restored["placed"], restored
        assert restored["step_diff"] <= 1e-5, restored
    assert status == 0 and report["ok"], output[-4000:]


def test_two_processes_match_one(tmp_path):
    port = scripts.free_port()
    workers = [
        scripts.start("two_process_check.py", tmp_path / f"dist{i}.npz", port, i) for i in (0, 1)
    ]
    status, single_output = scripts.run("two_process_check.py", tmp_path / "single.npz", "single")
    outputs = []
    for worker in workers:
        try:
            outputs.append(worker.communicate(timeout=300)[0])
        finally:
            worker.kill()
    assert status == 0, single_output[-4000:]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-4000:]
    dist, single = np.load(tmp_path / "dist0.npz"), np.load(tmp_path / "single.npz")
    assert sorted(dist.files) == sorted(single.files) and len(dist.files) > 10
    assert dist["restored_exact"] and single["restored_exact"]  # a 2-process checkpoint
    np.testing.assert_allclose(dist["losses"], single["losses"], atol=1e-5, rtol=0)
    for key in dist.files:
        np.testing.assert_allclose(dist[key], single[key], atol=1e-5, rtol=0, err_msg=key)

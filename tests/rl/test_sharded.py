"""The RL trainer on 8 simulated devices and on two processes gives the one-device run."""

import json
from pathlib import Path

import numpy as np

from tests.train import scripts

HERE = Path(__file__).parent
TOL = 1e-5


def test_meshes_and_two_processes_match_one_device(tmp_path):
    status, output = scripts.run("mesh_check.py", tmp_path, "mesh", timeout=600, where=HERE)
    lines = [line for line in output.splitlines() if line.startswith("{")]
    assert status == 0 and lines, output[-4000:]
    report = json.loads(lines[-1])
    assert report["steps"] == 3 and report["eval"] and report["probe"]
    for shape in ("(8, 1, 1)", "(2, 4, 1)", "(4, 1, 2)"):  # metric_diff: relative above 1
        diffs = report[shape]
        assert diffs["keys_match"] and diffs["metric_diff"] <= TOL, diffs
        assert diffs["param_diff"] <= TOL, diffs
    # generation reads the parameters with their training shardings, prompts split by rows
    for shape in ("(2, 4, 1)", "(4, 1, 2)"):
        generate = report[f"{shape}/generate"]
        assert generate["q_proj"] == "P('fsdp', 'tensor')", generate
        assert generate["embedding"] == "P('tensor', 'fsdp')", generate
    assert report["(2, 4, 1)/generate"]["prompt"] == "P(('data', 'fsdp'),)"
    assert "multiple of the mesh's data x fsdp = 8 rows" in report["bad_batch"]
    steered = report["steered"]  # EAST: the probe's 4 rows padded to the 8 devices
    assert "steering/entropy_shift" in steered["metrics"], steered
    # off-policy rows (ratio pi / mu != 1) give larger gradients, whose norm's float32 sum
    # differs a little more between meshes (6.7e-5 measured); the parameters agree to TOL
    assert steered["keys_match"] and steered["metric_diff"] <= 10 * TOL, steered
    assert steered["param_diff"] <= TOL, steered

    port = scripts.free_port()
    workers = [scripts.start("mesh_check.py", tmp_path, port, i, where=HERE) for i in (0, 1)]
    outputs = []
    for worker in workers:
        try:
            outputs.append(worker.communicate(timeout=600)[0])
        finally:
            worker.kill()
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-4000:]
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "distributed.json").read_text())
    assert [r.keys() for r in two] == [r.keys() for r in one]
    for a, b in zip(two, one, strict=True):
        # metrics relative above 1, as mesh_check's gap (dlogp/max is several nats)
        np.testing.assert_allclose([a[k] for k in b], [b[k] for k in b], atol=TOL, rtol=TOL)
    p_one, p_two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "distributed.npz")
    assert sorted(p_one.files) == sorted(p_two.files)
    for key in p_one.files:
        np.testing.assert_allclose(p_two[key], p_one[key], atol=TOL, rtol=0, err_msg=key)

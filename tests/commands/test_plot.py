import json

from entropix.plots import FIGURES, plot_run
from entropix.runs import metrics_table
from tests.commands.conftest import write_run

ALL = {"curves.png", "entropy_change.png", "quadrants.png", "entropy_position.png"}


def test_plots_written_for_the_metrics_a_run_logged(tmp_path):
    written = plot_run(write_run(tmp_path / "full"))
    assert {p.name for p in written} == ALL | {"entropy_law.png"}
    assert all(p.is_file() and p.stat().st_size > 1000 for p in written)
    bare = plot_run(write_run(tmp_path / "bare", dynamics=False, telemetry=False))
    assert {p.name for p in bare} == {"curves.png", "entropy_law.png"}


def test_sweep_plots_each_sub_run(tmp_path):
    write_run(tmp_path / "a", steps=8)
    write_run(tmp_path / "b", steps=8, dynamics=False)
    names = {p.name for p in plot_run(tmp_path)}
    assert names == ALL | {"entropy_law.png"}


def test_a_run_whose_predicted_change_is_always_zero_still_plots(tmp_path):
    """Zero advantages everywhere (e.g. no reward yet): every share is undefined, not a crash."""
    run_dir = write_run(tmp_path / "run", steps=4)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    zeroed = [
        json.dumps({k: (0.0 if k.startswith("dH/pred/") else v) for k, v in json.loads(r).items()})
        for r in lines
    ]
    (run_dir / "metrics.jsonl").write_text("\n".join(zeroed) + "\n")
    assert "quadrants.png" in {p.name for p in plot_run(run_dir)}


def test_entropy_change_draws_the_second_order_where_it_was_logged(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = write_run(tmp_path / "run", steps=8)
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        if "dH/measured" in row:
            row["dH/second_order"] = row["dH/measured"]  # an exact second order: r = R^2 = 1
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    draw = FIGURES["entropy_change.png"]
    fig = draw(plt, {"run": metrics_table(run_dir)})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(labels) == 2 and labels[1] == "run, 2nd order (r=1.00, R²=1.00)"
    assert "second order" in fig.axes[0].get_xlabel()
    plt.close(fig)
    fig = draw(plt, {"run": metrics_table(write_run(tmp_path / "first", steps=8))})
    assert len(fig.axes[0].get_legend().get_texts()) == 1
    assert "second order" not in fig.axes[0].get_xlabel()
    plt.close(fig)

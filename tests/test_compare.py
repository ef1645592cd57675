"""tools/compare.py: curves and tables from TensorBoard events; the resumable multi-seed sweep."""
import json
import os
import sys

import numpy as np
import pytest

from conftest import ROOT, make_cfg
from hrnet.engine.trainer import Trainer

sys.path.insert(0, os.path.join(ROOT, "tools"))
import compare  # noqa: E402

TINY = ["MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]",
        "DATASET.FORMAT", "coco", "DATASET.TRAINSET", "test_freihand.json", "DATASET.TESTSET", "test_freihand.json",
        "TRAIN.BATCH_SIZE_PER_GPU", "4", "TEST.BATCH_SIZE_PER_GPU", "8", "WORKERS", "0", "TRAIN.END_EPOCH", "1"]


def _opts(real_hands, out):
    return TINY + ["DATASET.ROOT", os.path.join(real_hands, "freihand"), "OUTPUT_DIR", str(out)]


def test_smoothing_is_tensorboards_debiased_ema():
    v = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(compare.smooth(v, 0.0), v)
    # debiased: the first point is the raw value, the second (0.5*1*0.5 + 0.5*2) / (1 - 0.25)
    np.testing.assert_allclose(compare.smooth(v, 0.5)[:2], [1.0, (0.25 + 1.0) / 0.75])


def test_repeated_steps_keep_the_latest_value(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path)) as w:  # a resumed run logs an interrupted epoch again
        for step, value in [(0, 0.5), (1, 0.4), (2, 0.9), (1, 0.3), (2, 0.2)]:
            w.add_scalar("valid/NME", value, step)
    run = compare.load_run(str(tmp_path))
    steps, values = run.nme
    assert steps.tolist() == [0, 1, 2]
    np.testing.assert_allclose(values, [0.5, 0.3, 0.2])
    assert run.best == (pytest.approx(0.2), 2) and run.status.startswith("partial")


@pytest.mark.parametrize("content, problem", [
    ("[1, 2]", "metrics.json holds a list"),
    ('{"status": "finished", "hparams": null, "end_epoch": 2, "wall_time_s": 7.5}', "bad hparams"),
    ("{not json", "unreadable metrics.json"),
])
def test_malformed_metrics_json_is_a_problem_not_a_crash(tmp_path, capsys, content, problem):
    from torch.utils.tensorboard import SummaryWriter

    run_dir = tmp_path / "hand_x"
    with SummaryWriter(str(run_dir)) as w:
        for step, value in [(0, 0.5), (1, 0.4)]:
            w.add_scalar("valid/NME", value, step)
    (run_dir / "metrics.json").write_text(content)
    run = compare.load_run(str(run_dir))
    assert any(problem in p for p in run.problems), run.problems
    assert run.best == (pytest.approx(0.4), 1) and run.optimizer == "" and run.lr is None
    assert compare.main([str(run_dir)]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| hand_x")]
    assert len(row) == 1 and problem in row[0] and "| 0.40000 |" in row[0]


def test_compare_two_runs_and_a_missing_one(real_hands, tmp_path, capsys):
    for yaml in ("hand_adam.yaml", "hand_sgd_lr0.01.yaml"):
        Trainer(make_cfg(os.path.join(ROOT, "experiments", yaml), _opts(real_hands, tmp_path / "out"))).fit()
    png = tmp_path / "cmp.png"
    assert compare.main([str(tmp_path / "out" / "hand_adam"), str(tmp_path / "out" / "hand_sgd_lr0.01"),
                         str(tmp_path / "out" / "hand_rmsprop"), "--out", str(png)]) == 0
    table = capsys.readouterr().out
    assert png.stat().st_size > 10_000
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| hand_")}
    assert set(rows) == {"hand_adam", "hand_sgd_lr0.01", "hand_rmsprop"}
    assert "missing" in rows["hand_rmsprop"] and "folder not found" in rows["hand_rmsprop"]
    for name in ("hand_adam", "hand_sgd_lr0.01"):
        m = json.loads((tmp_path / "out" / name / "metrics.json").read_text())
        cells = [c.strip() for c in rows[name].split("|")[1:-1]]
        assert cells[3] == "finished" and float(cells[5]) == pytest.approx(m["best_NME"], abs=1e-5)
        assert int(cells[6]) == m["best_epoch"] and float(cells[7]) == pytest.approx(m["final_NME"], abs=1e-5)
    # a folder of runs expands to its runs
    assert [os.path.basename(p) for p in compare.expand_run_dirs([str(tmp_path / "out")])] == [
        "hand_adam", "hand_sgd_lr0.01"]

"""tools/benchmark.py and hrnet.benchmark: every subcommand end to end on a tiny model (a smoke test of
the fields and the plumbing: the numbers of a shared test machine mean nothing), and the interleaving."""
import importlib.util
import json
import math
import os
import sys

import pytest

from conftest import ROOT, make_cfg

sys.path.insert(0, os.path.join(ROOT, "tools"))
_spec = importlib.util.spec_from_file_location("benchmark_tool", os.path.join(ROOT, "tools", "benchmark.py"))
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

TINY = ["MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]",
        "MODEL.SIGMA", "1.0", "DATASET.FORMAT", "coco", "DATASET.TRAINSET", "test_freihand.json",
        "TRAIN.BATCH_SIZE_PER_GPU", "2", "TEST.BATCH_SIZE_PER_GPU", "4", "WORKERS", "0", "DEVICE", "cpu"]
LOOKAHEAD = os.path.join(ROOT, "experiments", "hand_lookahead_adam.yaml")
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True)
def _restore_threads():
    """The benchmarks set torch's and OpenCV's thread counts process-wide (--threads 1, data's one
    worker thread): give the next test file in this process its own."""
    import cv2
    import torch

    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(threads)
    cv2.setNumThreads(cv_threads)


def _finite(value) -> bool:
    """Every number in ``value`` (nested lists and dicts included) is finite."""
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def _run(capsys, argv):
    assert tool.main(argv + ["--json", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert _finite(result), result
    return result


@pytest.mark.parametrize("argv,fields", [
    (["train-step", "--compare", "--amp", "bf16", "--steps", "1", "--warmup", "0"],
     {"images_per_s": 0, "step_s": 0, "images_per_s_fp32": 0, "speedup_vs_fp32": 0,
      "baseline_images_per_s_nchw": 0, "baseline_images_per_s_channels_last": 0, "speedup_vs_baseline_best": 0,
      "speedup_vs_nchw": 0, "speedup_channels_last": 0, "amp": "bf16", "batch": 2, "image_size": [64, 64],
      "optimizer": "Adam", "steps": 1, "warmup": 0, "allocator_tuned": None}),
    (["optimizer", "--cfg", LOOKAHEAD, "--steps", "1", "--warmup", "1"],
     {"headline_ratio": 0, "inner_ms_per_step": 0, "lookahead_ms_per_step": 0, "ratio": 0, "ratio_paired": 0,
      "ratio_cpu": 0, "ratio_from_sync": 0, "timm_ratio_from_sync": 0, "isolated_clock": "process_cpu",
      "inner": "adam", "k": 5, "rounds": 1, "steps_per_block": 10}),
    (["decode", "--steps", "10"],
     {"decode_argmax_s": 0, "decode_dark_s": 0, "metrics_s": 0, "images": 10, "chunk": 4, "heatmap": [16, 16]}),
])
def test_subcommand_fields(capsys, argv, fields):
    """``fields``: each must be present; a value of 0 means 'a non-negative number', None 'any'."""
    result = _run(capsys, argv + TINY)
    for key, want in fields.items():
        assert key in result, key
        if want == 0 and not isinstance(want, bool):
            assert isinstance(result[key], (int, float)) and result[key] >= 0, (key, result[key])
        elif want is not None:
            assert result[key] == want, (key, result[key])
    if argv[0] == "optimizer":
        assert set(result["isolated_ms"]) == {"inner_step", "lookahead_sync", "timm_sync"}
        assert result["headline_ratio"] == result["ratio_from_sync"]


def test_data_compare_from_the_first_sample(capsys, real_hands):
    """``--warmup 0``: the albumentations reference is the first augmentation the dataset seeds."""
    result = _run(capsys, ["data", "--compare", "--steps", "4", "--warmup", "0", "DATASET.ROOT",
                           os.path.join(real_hands, "freihand")] + TINY)
    assert result["steps"] == 4 and result["num_samples"] == 8 and result["rounds"] == 1 and result["block"] == 50
    assert set(result["cpu_ms_per_sample"]) == {"albumentations", "ours"}
    lo, hi = result["speedup_cpu_spread"]
    assert lo <= result["speedup_cpu"] <= hi and result["samples_per_s"] > 0


def test_data_compare_without_color_aug_is_one_error_line(capsys, real_hands):
    argv = ["data", "--compare", "DATASET.COLOR_AUG", "False", "DATASET.ROOT", os.path.join(real_hands, "freihand")]
    assert tool._cli.run(tool.main, argv + TINY) == 2
    assert capsys.readouterr().err == (
        "error: benchmark data --compare: DATASET.COLOR_AUG is off, nothing to compare\n")


def test_infer_on_a_tiny_model():
    from hrnet.benchmark import Options
    from hrnet.benchmark.infer import bench_infer

    result = bench_infer(make_cfg(None, TINY), Options(steps=2, warmup=1, threads=1),
                         models=[("tiny", "hrnet_w18_small", 64)], batches=[1, 2])
    assert _finite(result)
    for key in ("tiny/b1/torch", "tiny/b1/onnxruntime", "tiny/b2/torch", "tiny/b2/onnxruntime"):
        assert result[f"{key}/images_per_s"] > 0 and result[f"{key}/cpu_s_per_image"] >= 0
    assert result["tiny/b2/ort_vs_torch_speed"] == pytest.approx(
        result["tiny/b2/onnxruntime/images_per_s"] / result["tiny/b2/torch/images_per_s"], abs=2e-3)
    assert result["images_per_measurement"] == 2 and result["rounds"] == 1


def test_interleave_turns_and_warmup():
    from hrnet.benchmark.timing import interleave

    calls = []
    variants = {name: (lambda r, name=name: calls.append((r, name))) for name in "ABC"}
    samples = interleave(variants, 2, warmup=1, rotate=True)
    assert calls == [(0, "A"), (0, "B"), (0, "C"), (1, "B"), (1, "C"), (1, "A"), (2, "C"), (2, "A"), (2, "B")]
    assert all(len(s.wall) == len(s.cpu) == 2 for s in samples.values())  # the warm-up round is not kept
    calls.clear()
    interleave(variants, 2)
    assert [n for _, n in calls] == list("ABCABC")

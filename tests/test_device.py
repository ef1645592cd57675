"""hrnet.runtime.device: AMP.MODE auto picks bf16 only where the hardware computes it natively. The
hardware is faked (GPU capability, CPU flags), so the policy is tested whatever this machine has."""
import pytest
import torch

from hrnet.runtime import device as dev

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")


@pytest.fixture
def gpu(monkeypatch):
    """A fake CUDA device of a chosen compute capability; ``is_bf16_supported`` says True as it
    does for any GPU that can emulate bf16 (the answer the policy must not trust)."""
    def use(capability):
        monkeypatch.setattr(torch.version, "hip", None)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    return use


@pytest.mark.parametrize("capability, native", [((7, 5), False), ((7, 0), False), ((6, 1), False),
                                                ((8, 0), True), ((8, 9), True), ((9, 0), True)])
def test_auto_takes_bf16_only_on_gpus_that_compute_it(gpu, capability, native):
    gpu(capability)
    assert dev.cuda_has_native_bf16(CUDA) is native
    policy = dev.amp_policy("auto", "bf16", CUDA)
    assert policy.dtype == (torch.bfloat16 if native else None), policy.reason
    on = dev.amp_policy("on", "bf16", CUDA)  # asked for: granted, with a warning where it is emulated
    assert on.dtype == torch.bfloat16 and ("emulated" in on.reason) == (not native)


@pytest.fixture
def cpu_flags(monkeypatch, tmp_path):
    """A fake /proc/cpuinfo holding ``flags`` (None: no such file)."""
    def use(flags):
        path = tmp_path / f"cpuinfo{len(list(tmp_path.iterdir()))}"
        if flags is not None:
            path.write_text(f"processor\t: 0\nmodel name\t: fake\nflags\t\t: {flags}\n\nprocessor\t: 1\n"
                            f"flags\t\t: {flags}\n")
        monkeypatch.setattr(dev, "CPUINFO", str(path))
    return use


@pytest.mark.parametrize("flags, native", [
    ("fpu sse sse2 avx avx2 fma", False),  # AVX2 only: bf16 is emulated, several times slower
    ("avx2 avx512f avx512bw avx512_vnni avx512_fp16", False),  # AVX-512 without its bf16 extension
    ("avx2 avx512f avx512_bf16", True),
    ("avx2 avx512f amx_tile amx_int8 amx_bf16", True),
    ("", False),
    (None, False),  # unreadable: assume no
])
def test_auto_on_cpu_follows_the_cpu_flags(cpu_flags, flags, native):
    cpu_flags(flags)
    assert dev.cpu_has_native_bf16() is native
    policy = dev.amp_policy("auto", "bf16", CPU)
    assert policy.dtype == (torch.bfloat16 if native else None), policy.reason
    assert policy.name == ("bf16" if native else "fp32")
    on = dev.amp_policy("on", "bf16", CPU)
    assert on.dtype == torch.bfloat16 and ("emulated" in on.reason) == (not native)


def test_off_and_fp16_on_cpu(cpu_flags):
    cpu_flags("avx512_bf16 amx_bf16")
    assert dev.amp_policy("off", "bf16", CPU).dtype is None
    fp16 = dev.amp_policy("on", "fp16", CPU)
    assert fp16.dtype is None and "CUDA-only" in fp16.reason and not fp16.use_scaler


def test_describe_machine_names_the_cpu_and_its_relevant_flags(cpu_flags):
    cpu_flags("fpu sse2 avx2 fma avx512f amx_tile amx_bf16 avx512_vnni")
    got = dev.describe_machine(CPU)
    assert got["cpu"] == "fake"
    assert got["cpu_flags"] == ["avx2", "avx512f", "amx_bf16", "amx_tile", "fma"]
    assert got["threads"] == torch.get_num_threads() and got["torch"] == torch.__version__
    assert got["device"] == "cpu" and "gpu" not in got
    cpu_flags(None)
    assert dev.describe_machine(CPU)["cpu"] == "unknown" and dev.describe_machine(CPU)["cpu_flags"] == []


# ---------------------------------------------------------------------------- device choice, backends
@pytest.fixture
def cuda_count(monkeypatch):
    """Fake CUDA availability: ``use(n)`` makes n GPUs visible (0: no CUDA)."""
    def use(n):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    return use


def test_select_device(cuda_count):
    with pytest.raises(dev.DeviceError, match=r"^DEVICE must be auto\|cpu\|cuda, got 'gpu'$"):
        dev.select_device("gpu")
    cuda_count(0)
    with pytest.raises(dev.DeviceError, match=r"^DEVICE cuda: CUDA is not available on this machine \(use DEVICE "
                                              r"cpu or auto\)$"):
        dev.select_device("cuda")
    assert dev.select_device() == CPU and dev.select_device("cpu") == CPU
    cuda_count(2)  # under torchrun, rank 3 of a node with 2 GPUs shares GPU 1
    assert dev.select_device() == torch.device("cuda", 0)
    assert dev.select_device("auto", local_rank=3) == torch.device("cuda", 1)
    assert dev.select_device("cuda", local_rank=2) == torch.device("cuda", 0)
    assert dev.select_device("cpu", local_rank=1) == CPU


@pytest.fixture
def backends(monkeypatch):
    """Record ``torch.use_deterministic_algorithms``; restore cudnn's and the TF32 flags and the environment."""
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: calls.append((a, k)))
    for flag in ("deterministic", "benchmark", "allow_tf32"):
        monkeypatch.setattr(torch.backends.cudnn, flag, getattr(torch.backends.cudnn, flag))
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", torch.backends.cuda.matmul.allow_tf32)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    return calls


def test_deterministic_backends(backends, monkeypatch):
    torch.backends.cudnn.benchmark = True
    got = dev.configure_backends(deterministic=True, cudnn_benchmark=True)  # DETERMINISTIC wins over the autotuner
    # warn_only=False: an op without a deterministic kernel raises instead of silently varying
    assert backends == [((True,), {"warn_only": False})]
    assert torch.backends.cudnn.deterministic is True and torch.backends.cudnn.benchmark is False
    assert got == {"deterministic": True, "tf32": False, "cudnn_benchmark": False}
    assert dev.os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's own setting stays
    dev.configure_backends(deterministic=True, cudnn_benchmark=False)
    assert dev.os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    backends.clear()
    dev.configure_backends(deterministic=False, cudnn_benchmark=False)  # an earlier run's setting is undone
    assert backends == [((False,), {"warn_only": False})] and torch.backends.cudnn.deterministic is False


def test_benchmark_backends(backends):
    torch.backends.cudnn.deterministic = False
    got = dev.configure_backends(deterministic=False, cudnn_benchmark=1, device=CUDA)
    assert torch.backends.cudnn.benchmark is True and torch.backends.cudnn.deterministic is False
    assert got == {"deterministic": False, "tf32": False, "cudnn_benchmark": True}
    assert "CUBLAS_WORKSPACE_CONFIG" not in dev.os.environ
    dev.configure_backends(deterministic=False, cudnn_benchmark=0)
    assert torch.backends.cudnn.benchmark is False


def test_tf32_only_where_asked_and_only_on_cuda(backends):
    """TF32 False (the default) keeps CUDA float32 exact, also cuDNN's convolutions (torch's own default
    lets them use TF32); on a CPU the flag changes nothing and is recorded as off."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    assert dev.configure_backends(False, True, tf32=False, device=CUDA)["tf32"] is False
    assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
    assert dev.configure_backends(False, True, tf32=True, device=CUDA)["tf32"] is True
    assert torch.backends.cudnn.allow_tf32 is True and torch.backends.cuda.matmul.allow_tf32 is True
    assert dev.configure_backends(False, True, tf32=True, device=CPU) == {
        "deterministic": False, "tf32": False, "cudnn_benchmark": False}
    assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False


def test_configure_backends_from_cfg_and_old_configs(backends):
    """The committed study configs predate TF32: they load with TF32 False, the old CPU numerics."""
    import glob

    from conftest import ROOT, make_cfg

    old = sorted(glob.glob(f"{ROOT}/docs/*/runs/*/config.yaml"))[:1]
    for path in old:
        assert "TF32" not in open(path).read() and make_cfg(path).TF32 is False
    cfg = make_cfg(None, ["TF32", "True", "CUDNN.BENCHMARK", "False"])
    assert dev.configure_backends_from_cfg(cfg, CUDA) == {"deterministic": False, "tf32": True,
                                                          "cudnn_benchmark": False}
    assert dev.configure_backends_from_cfg(make_cfg(None), CPU)["tf32"] is False


def test_deterministic_refused_where_bilinear_backward_is_not(backends, monkeypatch):
    """The model upsamples bilinearly; CUDA has no deterministic backward for it: DETERMINISTIC True
    there is refused in one line naming the key, not run with nondeterministic kernels."""
    assert dev._bilinear_backward_is_deterministic(CPU)  # the real probe, on this machine's CPU
    monkeypatch.setattr(dev, "_bilinear_backward_is_deterministic", lambda device: device.type != "cuda")
    with pytest.raises(dev.DeviceError, match=r"^DETERMINISTIC True: .*no deterministic backward kernel on cuda"
                                              r".*set DETERMINISTIC False") as err:
        dev.configure_backends(deterministic=True, cudnn_benchmark=True, device=CUDA)
    assert "\n" not in str(err.value)
    assert backends[-1] == ((False,), {})  # nothing left switched on
    assert dev.configure_backends(True, True, device=CPU)["deterministic"] is True


def test_benchmark_train_step_runs_in_the_trainings_backend_settings(backends):
    """``benchmark train-step`` sets the backends as the trainer does (cuDNN autotuner, TF32) and says which."""
    import os

    from conftest import ROOT, make_cfg
    from hrnet.benchmark import Options
    from hrnet.benchmark.train_step import bench_train_step

    torch.backends.cudnn.benchmark = False
    threads = torch.get_num_threads()
    cfg = make_cfg(os.path.join(ROOT, "experiments", "hand_lookahead_adam.yaml"),
                   ["MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]",
                    "TRAIN.BATCH_SIZE_PER_GPU", "2", "DEVICE", "cpu", "CUDNN.BENCHMARK", "True"])
    try:
        result = bench_train_step(cfg, Options(steps=1, warmup=0, threads=1))
    finally:
        torch.set_num_threads(threads)
    assert torch.backends.cudnn.benchmark is True  # what the trainer would have set for this config
    assert result["backends"] == {"deterministic": False, "tf32": False, "cudnn_benchmark": False}  # on a CPU
    assert result["optimizer"] == "Lookahead"


# ---------------------------------------------------------------------------- the policy and its reasons
def test_auto_and_on_reasons(gpu, cpu_flags):
    gpu((8, 0))
    assert dev.amp_policy("auto", "bf16", CUDA).reason == "AMP.MODE auto: bf16, native on this CUDA device"
    assert dev.amp_policy("on", "bf16", CUDA).reason == "AMP.MODE on: bf16"
    fp16 = dev.amp_policy("on", "fp16", CUDA)
    assert (fp16.dtype, fp16.reason, fp16.use_scaler, fp16.name) == (torch.float16, "AMP.MODE on: fp16", True, "fp16")
    gpu((7, 5))
    assert dev.amp_policy("on", "fp16", CUDA).reason == "AMP.MODE on: fp16"  # fp16 is native there: no note
    assert dev.amp_policy("auto", "fp16", CUDA).reason == "AMP.MODE auto: float32, no native bf16 on this cuda"
    cpu_flags("avx2 amx_bf16")
    auto = dev.amp_policy("auto", "bf16", "cpu")  # a device name is accepted too
    assert (auto.device, auto.reason) == (CPU, "AMP.MODE auto: bf16, native on this CPU (AVX512-BF16/AMX)")
    cpu_flags("avx2")
    assert dev.amp_policy("auto", "bf16", CPU).reason == "AMP.MODE auto: float32, no native bf16 on this cpu"
    assert dev.amp_policy("on", "bf16", CPU).reason == "AMP.MODE on: bf16 (emulated here: slower than float32)"
    off = dev.amp_policy("off", "fp16", CPU)
    assert (off.dtype, off.reason, off.enabled, off.name) == (None, "AMP.MODE off", False, "fp32")
    fp16 = dev.amp_policy("on", "fp16", CPU)
    assert fp16.reason == "AMP.MODE on with fp16: fp16 autocast is CUDA-only, float32 on CPU"


def test_bad_mode_or_dtype():
    with pytest.raises(ValueError, match=r"^AMP.MODE must be off\|on\|auto, got 'fast'$"):
        dev.amp_policy("fast", "bf16", CPU)
    with pytest.raises(ValueError, match=r"^AMP.DTYPE must be bf16\|fp16, got 'fp8'$"):
        dev.amp_policy("on", "fp8", CPU)


def test_rocm_and_other_devices(gpu, cpu_flags, monkeypatch):
    gpu((7, 0))
    monkeypatch.setattr(torch.version, "hip", "6.0")  # ROCm: bf16 native whatever the "capability"
    assert dev.cuda_has_native_bf16(CUDA) is True
    cpu_flags("avx512_bf16")  # a native CPU must not make another device type native
    meta = dev.amp_policy("auto", "bf16", torch.device("meta"))
    assert meta.dtype is None and meta.reason == "AMP.MODE auto: float32, no native bf16 on this meta"


def test_autocast_and_grad_scaler(cpu_flags, monkeypatch):
    cpu_flags("avx2")
    x = torch.ones(2, 2)
    with dev.amp_policy("off", "bf16", CPU).autocast():
        assert (x @ x).dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    bf16 = dev.amp_policy("on", "bf16", CPU)
    assert bf16.enabled and not bf16.use_scaler and bf16.name == "bf16"
    with bf16.autocast():
        assert (x @ x).dtype == torch.bfloat16
    made = []
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device, **kw: made.append((device, kw)))
    bf16.grad_scaler()
    dev.AmpPolicy(CUDA, torch.float16, "test").grad_scaler()
    assert made == [("cpu", {"enabled": False}), ("cuda", {"enabled": True})]


def test_policy_from_cfg(cpu_flags):
    from conftest import make_cfg

    cpu_flags("avx2")
    p = dev.amp_policy_from_cfg(make_cfg(None, ["AMP.MODE", "on", "AMP.DTYPE", "bf16"]), CPU)
    assert p.dtype == torch.bfloat16 and "emulated" in p.reason
    assert dev.amp_policy_from_cfg(make_cfg(None, ["AMP.MODE", "on", "AMP.DTYPE", "fp16"]), CPU).dtype is None


def test_describe_machine_on_cuda(cpu_flags, monkeypatch):
    cpu_flags("avx2")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"Fake GPU {device}")
    got = dev.describe_machine(CUDA)
    assert got["device"] == "cuda:0" and got["gpu"] == "Fake GPU cuda:0" and got["cpu_flags"] == ["avx2"]


def test_each_policy_names_its_device(cpu_flags):
    cpu_flags("avx2")
    for mode, dtype in (("off", "bf16"), ("auto", "bf16"), ("on", "fp16"), ("on", "bf16")):
        assert dev.amp_policy(mode, dtype, CPU).device == CPU, (mode, dtype)


def test_the_gpu_asked_about_is_the_one_checked(monkeypatch):
    """A node with an older GPU 0 (the current device) and an Ampere GPU 1: rank 1 asks about GPU 1."""
    gpu1 = torch.device("cuda", 1)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6) if device == gpu1 else (7, 5))
    assert dev.cuda_has_native_bf16(gpu1) is True and dev.cuda_has_native_bf16(CUDA) is False
    assert dev.amp_policy("auto", "bf16", gpu1).dtype == torch.bfloat16
    assert dev.amp_policy("auto", "bf16", CUDA).dtype is None


def test_cuda_autocast_uses_the_policy_dtype():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available": the context is still built
        ctx = dev.AmpPolicy(CUDA, torch.bfloat16, "test").autocast()
    assert (ctx.device, ctx.fast_dtype) == ("cuda", torch.bfloat16)  # CUDA's default would be fp16


# ---------------------------------------------------------------------------- the machine record's parts
def test_cpuinfo_field_matches_whole_keys_of_the_first_processor(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: Xeon: 8480+\nmodel\t\t: 143\nflags\t\t: a b\n"
                    "no separator line\n\nprocessor\t: 1\nmodel\t\t: 999\n")
    assert dev._cpuinfo_field(str(path), "model") == "143"  # not "model name", not processor 1's
    assert dev._cpuinfo_field(str(path), "model name") == "Xeon: 8480+"  # split at the first colon only
    assert dev._cpuinfo_field(str(path), "no separator line") is None  # a line without ":" has no key
    assert dev._cpuinfo_field(str(path), "stepping") is None
    assert dev._cpuinfo_field(str(tmp_path / "missing"), "model") is None


def test_cpu_id_reads_numbers_and_none_for_the_rest(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("cpu family\t: 25\nmodel\t\t: unknown\n")
    assert dev._cpu_id(str(path)) == {"family": 25, "model": None, "stepping": None}


def _cache(root, entries):
    for i, files in enumerate(entries):
        d = root / f"index{i}"
        d.mkdir(parents=True)
        for name, value in files.items():
            (d / name).write_text(value + "\n")
    return str(root)


def test_cache_kib_of_the_data_and_unified_l2_l3(tmp_path):
    folder = _cache(tmp_path / "a", [
        {"level": "1", "type": "Data", "size": "48K"},
        {"level": "2", "type": "Data", "size": "2048"},  # no unit: KiB
        {"level": "2", "type": "Instruction", "size": "999K"},  # an instruction cache is not counted
        {"level": "3", "type": "Unified", "size": "1G"},
        {"level": "4", "type": "Unified", "size": "64M"},
    ])
    assert dev._cache_kib(folder) == {"L2": 2048, "L3": 1024 * 1024}
    folder = _cache(tmp_path / "b", [
        {"level": "3", "type": "Unified"},  # no size file: skipped, the next ones still read
        {"level": "2", "type": "Unified", "size": "2m"},  # units in either case
        {"level": "3", "type": "Unified", "size": "lots"},  # not a number: skipped
    ])
    assert dev._cache_kib(folder) == {"L2": 2048}
    assert dev._cache_kib(_cache(tmp_path / "c", [{"type": "Unified", "size": "2K"}])) == {}  # no level


def test_fingerprint_runs_the_documented_kernels_in_float32():
    shapes = [tuple(t.shape) for t in dev._fingerprint_tensors(CPU)]
    assert shapes == [(4, 64, 16, 16), (4, 3, 32, 32), (64, 3, 3, 3),  # stride-2 3x3 stem, same padding
                      (4, 18, 16, 16), (4, 18, 16, 16), (18, 18, 3, 3),
                      (4, 18, 8, 8), (4, 36, 8, 8), (18, 36, 1, 1),
                      (4, 32, 16, 16), (4, 32, 16, 16), (32, 32, 3, 3),
                      (128, 96)]
    assert {t.dtype for t in dev._fingerprint_tensors(CPU)} == {torch.float32}


@pytest.mark.parametrize("error", [RuntimeError, AssertionError])
def test_a_device_that_cannot_run_the_fingerprint_has_none(monkeypatch, error):
    seen = []

    def fail(device):
        seen.append(device)
        raise error("no such device")

    monkeypatch.setattr(dev, "_fingerprint_tensors", fail)
    assert dev.numerics_fingerprint(CUDA) is None and seen == [CUDA]  # computed on the device asked about


def test_describe_machine_fingerprints_the_device_it_describes(cpu_flags, monkeypatch):
    cpu_flags("avx2")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(dev, "numerics_fingerprint", lambda device: f"fingerprint of {device}")
    assert dev.describe_machine(CUDA)["numerics"] == "fingerprint of cuda:0"


def test_configure_backends_from_cfg_deterministic(backends):
    from conftest import make_cfg

    got = dev.configure_backends_from_cfg(make_cfg(None, ["DETERMINISTIC", "True"]), CPU)
    assert got == {"deterministic": True, "tf32": False, "cudnn_benchmark": False}
    assert backends == [((True,), {"warn_only": False})]


def test_fingerprint_is_the_seeded_recipe():
    """Fingerprints in earlier records stay comparable only while the computation is the same: seed
    20240611 from a private generator, inputs N(0, 1), weights 0.1 N(0, 1), output gradients N(0, 1),
    then the matmul of two N(0, 1) matrices (recomputed here step by step, compared bitwise)."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(20240611)
    expected = []
    for cin, cout, k, stride, size in dev._FINGERPRINT_CONVS:
        x = torch.randn(4, cin, size, size, generator=gen).requires_grad_(True)
        w = (0.1 * torch.randn(cout, cin, k, k, generator=gen)).requires_grad_(True)
        y = F.conv2d(x, w, stride=stride, padding=k // 2)
        expected += [y.detach(), *torch.autograd.grad(y, (x, w), torch.randn(y.shape, generator=gen))]
    expected.append(torch.randn(128, 192, generator=gen) @ torch.randn(192, 96, generator=gen))
    got = dev._fingerprint_tensors(CPU)
    assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(got, expected))
    assert not any(t.requires_grad for t in got)  # results, detached from their graphs


def test_the_bilinear_probe_runs_the_models_upsampling(monkeypatch):
    """The probe must run the op the model runs (hrnet/models/hrnet.py: bilinear, align_corners False)
    and answer False when its backward raises (as under deterministic algorithms on CUDA)."""
    calls = []
    interpolate = dev.F.interpolate

    def recording(x, **kw):
        calls.append((x.device, x.requires_grad, kw))
        return interpolate(x, **kw)

    monkeypatch.setattr(dev.F, "interpolate", recording)
    meta = torch.device("meta")  # on the device asked about (meta: not this CPU, and runs anywhere)
    assert dev._bilinear_backward_is_deterministic(meta) is True
    assert calls == [(meta, True, {"scale_factor": 2.0, "mode": "bilinear", "align_corners": False})]

    def no_deterministic_backward(x, **kw):
        raise RuntimeError("upsample_bilinear2d_backward_out_cuda does not have a deterministic implementation")

    monkeypatch.setattr(dev.F, "interpolate", no_deterministic_backward)
    assert dev._bilinear_backward_is_deterministic(CPU) is False

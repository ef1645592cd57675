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

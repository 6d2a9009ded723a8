"""Which settings of os.environ came too late for this process (collectors/late_environment.py)."""

from __future__ import annotations

from dsprof.collectors.late_environment import DEVICE_VARIABLES, read_at_load, set_too_late


def test_thread_counts_are_not_kept_torch_reads_them_when_the_script_imports_it():
    # dsprof starts when the script imports torch (dsprof.collectors.torch_arrival):
    # OMP_NUM_THREADS set before that line counts as without dsprof, one set after it is as
    # late as without
    assert not {"OMP_NUM_THREADS", "MKL_NUM_THREADS"} & set(read_at_load())


def test_device_settings_count_only_where_dsprof_initialised_an_accelerator(monkeypatch):
    for name in DEVICE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    at_load = read_at_load()  # as torch loaded: none of them set
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "0")
    # on a CPU run nothing read them: the script's settings are its own business
    assert set_too_late(at_load, accelerator=False) == []
    # where the driver was initialised as dsprof's session started, it read them before the
    # script set them
    assert set_too_late(at_load, accelerator=True) == [
        {"variable": "CUDA_VISIBLE_DEVICES", "set_to": "1", "read_as": None,
         "used": "CUDA_VISIBLE_DEVICES unset"},
        {"variable": "HIP_VISIBLE_DEVICES", "set_to": "0", "read_as": None,
         "used": "HIP_VISIBLE_DEVICES unset"}]
    # a variable the script left alone, or unset, is not named
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert [i["variable"] for i in set_too_late(at_load, accelerator=True)] == [
        "HIP_VISIBLE_DEVICES"]


def test_the_allocators_settings_are_never_named(monkeypatch):
    # torch's allocator reads PYTORCH_CUDA_ALLOC_CONF; dsprof never starts it before the script
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    at_load = read_at_load()
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    assert set_too_late(at_load, accelerator=True) == []

"""Which settings of os.environ came too late for this process (collectors/late_environment.py)."""

from __future__ import annotations

from dsprof.collectors.late_environment import set_too_late


def test_a_thread_count_set_after_load_is_named_unless_the_script_set_it_itself(monkeypatch):
    at_load = {"OMP_NUM_THREADS": None, "MKL_NUM_THREADS": None}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # torch kept its 2 threads: the script's 1 was not used
    assert set_too_late(at_load, threads=2, accelerator=False) == [
        {"variable": "OMP_NUM_THREADS", "set_to": "1", "read_as": None, "used": "2 threads"}]
    # the script called torch.set_num_threads(1) as well: the run used what it asked for
    assert set_too_late(at_load, threads=1, accelerator=False) == []
    # a value no runtime reads as a count is not judged
    monkeypatch.setenv("OMP_NUM_THREADS", "auto")
    assert set_too_late(at_load, threads=2, accelerator=False) == []


def test_device_settings_count_only_where_dsprof_initialised_an_accelerator(monkeypatch):
    at_load = {"CUDA_VISIBLE_DEVICES": None, "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:False"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    # on a CPU run nothing read them: the script's settings are its own business
    assert set_too_late(at_load, threads=2, accelerator=False) == []
    # on a GPU run dsprof's device check read them before the script set them
    assert set_too_late(at_load, threads=2, accelerator=True) == [
        {"variable": "CUDA_VISIBLE_DEVICES", "set_to": "1", "read_as": None,
         "used": "CUDA_VISIBLE_DEVICES unset"},
        {"variable": "PYTORCH_CUDA_ALLOC_CONF", "set_to": "expandable_segments:True",
         "read_as": "expandable_segments:False",
         "used": "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:False"}]

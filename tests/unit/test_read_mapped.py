"""trace_file.read_mapped, the reader ingest holds traces with: the same bytes and the same
refusals as read_bytes, in a memory map instead of malloc's heap."""

from __future__ import annotations

import gzip
import mmap

import pytest

from dsprof.errors import TraceFormatError
from dsprof.ingest.trace_file import read_bytes, read_mapped
from tests.conftest import trace_dir


def _both(path):
    got = read_mapped(path)
    assert isinstance(got.obj, mmap.mmap)  # not a bytes object from the heap
    return bytes(got), read_bytes(path)


def test_a_real_trace_reads_the_same(tmp_path):
    # GIVEN a real gzip trace (its trailer gives the size), and the same JSON uncompressed
    real = min(trace_dir("hta_a100_2rank_nccl_r0").glob("*.json.gz"))
    plain = tmp_path / "plain.json"
    plain.write_bytes(gzip.decompress(real.read_bytes()))
    # WHEN each is read into a map / as bytes
    # THEN the same bytes
    for path in (real, plain):
        got, want = _both(path)
        assert got == want and len(got) > 9_000_000


def test_members_padding_garbage_and_a_lying_trailer(tmp_path):
    text = gzip.decompress(min(trace_dir("hta_amd_mi250").glob("*.json.gz")).read_bytes())
    cases = {
        # `cat a.gz b.gz`, zero padding after a member, trailing garbage (ignored by gzip(1))
        "members": gzip.compress(text[:1000]) + gzip.compress(text[1000:]),
        "padded": gzip.compress(text) + b"\x00" * 10,
        "garbage": gzip.compress(text) + b"not gzip",
        # the trailer (of the last member) says 10 bytes: the map grows past its first size
        "small_last_member": gzip.compress(text[:-10]) + gzip.compress(text[-10:]),
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.json.gz"
        path.write_bytes(data)
        got, want = _both(path)
        assert got == want == text, name


def test_refusals_are_those_of_read_bytes(tmp_path, monkeypatch):
    text = b'{"traceEvents": [' + b" " * 5_000_000 + b"]}"
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(gzip.compress(text)[:2000])
    corrupt = tmp_path / "corrupt.json.gz"
    data = bytearray(gzip.compress(text))
    data[30:40] = b"\xff" * 10
    corrupt.write_bytes(bytes(data))
    for path, words in ((cut, "truncated or corrupt"), (corrupt, "truncated or corrupt"),
                        (tmp_path / "missing.json.gz", "no such file")):
        with pytest.raises(TraceFormatError, match=words):
            read_mapped(path)
        with pytest.raises(TraceFormatError, match=words):
            read_bytes(path)
    # past the expansion cap: refused while inflating
    big = tmp_path / "big.json.gz"
    big.write_bytes(gzip.compress(text))
    monkeypatch.setenv("DSPROF_MAX_TRACE_BYTES", "1000000")
    for read in (read_mapped, read_bytes):
        with pytest.raises(TraceFormatError, match="expands past 1,000,000 bytes"):
            read(big)


def test_an_empty_file(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    assert bytes(read_mapped(empty)) == read_bytes(empty) == b""

"""The C++ kernels' own thread pool (csrc/cpu/task_pool.cpp), seen through the ops: calls from several Python
threads at once, a forked child (a DataLoader worker), and torch.set_num_threads."""

import hashlib
import os
import select
import threading

import pytest
import torch

from lamp_kernels import kernels_torch, ops

pytestmark = pytest.mark.skipif(ops._C is None, reason="C++ extension not built")


def _layers():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(600_000, generator=g), (torch.randn(400_000, generator=g) * 0.1).bfloat16()]


def test_concurrent_calls_from_python_threads():
    """The kernels release the GIL: calls that overlap share the pool (one runs its tasks inline)."""
    layers = _layers()
    want_scores = ops._C.lamp_scores(layers, [None, None], True)
    want_summary = [ops._C.bin_summary(w, None) for w in layers]
    errors = []

    def work():
        try:
            for _ in range(3):
                got = ops._C.lamp_scores(layers, [None, None], True)
                assert all(torch.equal(a, b) for a, b in zip(got, want_scores))
                for w, (c, s) in zip(layers, want_summary):
                    c2, s2 = ops._C.bin_summary(w, None)
                    assert torch.equal(c, c2) and torch.equal(s, s2)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a call hung"
    assert not errors, errors[0]


def _digest(tensors):
    """A hash of the tensors' bytes, computed without torch ops (torch's own OpenMP pool hangs in a forked
    child once the parent has used it; this test is about the library's pool)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _thread_count():
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not hasattr(os, "fork") or not os.path.isdir("/proc/self/task"), reason="needs fork and /proc")
def test_forked_child_gets_a_working_pool():
    """A child forked after the pool has started has none of its threads; its first call makes a new pool, with
    a helper thread of its own."""
    layers = _layers()
    cut_key = int(kernels_torch.magnitude_keys(layers[0])[3])
    want = _digest(ops._C.lamp_scores(layers, [None, None], True) + [ops._C.apply_cut(layers[0], None, cut_key, 0)])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only the library's kernels, then the digest back through the pipe
        status = 1
        try:
            torch.set_num_threads(2)
            before = _thread_count()
            got = ops._C.lamp_scores(layers, [None, None], True) + [ops._C.apply_cut(layers[0], None, cut_key, 0)]
            os.write(write, f"{_digest(got)} {_thread_count() - before}".encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    ready, _, _ = select.select([read], [], [], 60)
    if not ready:
        os.kill(pid, 9)
    got = os.read(read, 256).decode().split() if ready else []
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert ready, "the forked child hung"
    assert os.waitstatus_to_exitcode(status) == 0 and got[0] == want
    assert int(got[1]) >= 1, "the child ran every task on the calling thread: no new helper"


def test_results_do_not_depend_on_the_thread_count():
    layers = _layers()
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            results.append((ops._C.lamp_scores(layers, [None, None], False),
                            [ops._C.bin_summary(w, None) for w in layers]))
    finally:
        torch.set_num_threads(before)
    (s0, b0) = results[0]
    for s, b in results[1:]:
        assert all(torch.equal(x, y) for x, y in zip(s, s0))
        assert all(torch.equal(c, c0) and torch.equal(t, t0) for (c, t), (c0, t0) in zip(b, b0))

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


_AFFINITY_CHILD = r"""
import os, sys, torch
from lamp_kernels import ops
torch.set_num_threads(2)
layers = [torch.randn(600_000), torch.randn(300_000)]
want = ops._C.lamp_scores(layers, [None, None], True)  # starts the helper
main = os.getpid()
cpus = sorted(os.sched_getaffinity(main))
helpers = [int(t) for t in os.listdir("/proc/self/task") if int(t) != main]
before = {t: os.sched_getaffinity(t) for t in helpers}
os.sched_setaffinity(main, {cpus[0]})  # the caller on one CPU: a helper woken there moves off it, once
# a process spinning on another CPU, so that the scheduler has no idle CPU to put the helper on by itself
import subprocess
spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
os.sched_setaffinity(spin.pid, {cpus[1]})
try:
    for _ in range(30):
        assert all(torch.equal(a, b) for a, b in zip(ops._C.lamp_scores(layers, [None, None], True), want))
finally:
    spin.kill()
    spin.wait()
after = {t: os.sched_getaffinity(t) for t in helpers}
assert after == before, (before, after)  # every helper's mask as it was: nothing left pinned
for t in helpers:  # a helper allowed only the caller's CPU stays there and still works
    os.sched_setaffinity(t, {cpus[0]})
for _ in range(5):
    assert all(torch.equal(a, b) for a, b in zip(ops._C.lamp_scores(layers, [None, None], True), want))
assert all(os.sched_getaffinity(t) == {cpus[0]} for t in helpers)
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux affinity and two CPUs")
def test_helpers_leave_their_affinity_as_it_was():
    """A helper woken on the caller's CPU moves itself to another CPU of its mask and restores the mask at once:
    in a child process with the caller pinned to one CPU, every helper's mask is unchanged after many jobs, a
    helper allowed only the caller's CPU keeps working there, and the results do not change."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _AFFINITY_CHILD], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]

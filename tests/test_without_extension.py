"""Without the compiled extension the package imports, warns once, and runs on the reference backend."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, warnings
    sys.modules["lamp_kernels._C"] = None  # makes `from . import _C` raise ImportError
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import torch, lamp_kernels as lk
    msgs = [str(w.message) for w in caught if "lamp_kernels" in str(w.message)]
    assert len(msgs) == 1 and "pip install --no-build-isolation -e ." in msgs[0], msgs
    assert lk.available_backends() == ["reference"]
    w = [torch.randn(20, generator=torch.Generator().manual_seed(0)), torch.randn(5, 5)]
    masks = lk.prune_masks(w, 0.5)
    assert sum(int((~m).sum()) for m in masks) == 22
    assert lk.lamp_scores(w)[0].dtype == torch.float32
    try:
        lk.prune_masks(w, 0.5, backend="cpu")
    except RuntimeError as e:
        assert "not available" in str(e) and "no-build-isolation" in str(e)
    else:
        raise AssertionError("backend='cpu' should raise without the extension")
    print("ok")
""")


def test_reference_only_install():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"

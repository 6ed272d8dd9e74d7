"""The LLM demo's pieces (examples/): the handbook corpus (markup stripping, reading order, the disjoint
evaluation/calibration split), perplexity, and the converted-checkpoint cache. Fast: synthetic pages and a
tiny Llama; the real corpus is checked only where it is installed."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import handbook  # noqa: E402

PAGE = """<?xml version="1.0" encoding="UTF-8"?><html><head><title>t</title>{next}</head><body>
<div class="section"><div class="titlepage"><h2>Title is not prose</h2></div>
<div class="para">
   First   paragraph of <code class="command">{name}</code> &amp; friends.
</div><div class="informalexample"><pre class="screen">$ not prose</pre></div>
<div class="para">Second, with a nested block: <div class="itemizedlist">item</div> and
<pre class="programlisting">code()</pre>tail.</div><p>outside any para</p><img src="x.png" />
</div></body></html>"""


def write_book(root: Path, pages: list[str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    chain = ["index.html", *pages]
    for i, name in enumerate(chain):
        link = f'<link rel="next" href="{chain[i + 1]}" />' if i + 1 < len(chain) else ""
        (root / name).write_text(PAGE.format(next=link, name=name), encoding="utf-8")


@pytest.fixture
def book(tmp_path, monkeypatch):
    root = tmp_path / "en-US"
    write_book(root, ["b.html", "a.html", "c.html"])  # reading order is the link chain, not file names
    monkeypatch.setenv("LAMP_KERNELS_HANDBOOK_DIR", str(root))
    handbook.paragraphs.cache_clear()
    yield root
    handbook.paragraphs.cache_clear()


def test_paragraphs_are_prose_only_in_reading_order(book):
    paras = handbook.paragraphs()
    assert paras == tuple(p for name in ("b.html", "a.html", "c.html") for p in (
        f"First paragraph of {name} & friends.", "Second, with a nested block: item and tail."))
    # the title page (index.html) is left out


def test_evaluation_and_calibration_split_the_book(book):
    ev, cal = handbook.evaluation_text(), handbook.calibration_text()
    assert ev and cal and "\n\n".join([ev, cal]) == "\n\n".join(handbook.paragraphs())
    assert ev.startswith("First paragraph of b.html") and cal.endswith("tail.")

    class Chars:  # a tokenizer with one token per character
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

    assert "".join(map(chr, handbook.evaluation_tokens(Chars(), 10).tolist())) == ev[:10]
    assert "".join(map(chr, handbook.calibration_tokens(Chars(), 10).tolist())) == cal[:10]
    with pytest.raises(ValueError, match="fewer than"):
        handbook.evaluation_tokens(Chars(), len(ev) + 1)


def test_missing_corpus_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMP_KERNELS_HANDBOOK_DIR", str(tmp_path / "nowhere"))
    handbook.paragraphs.cache_clear()
    with pytest.raises(handbook.CorpusMissing, match="apt-get install debian-handbook"):
        handbook.paragraphs()
    handbook.paragraphs.cache_clear()


def test_real_corpus_parts_are_disjoint_prose(monkeypatch):
    monkeypatch.delenv("LAMP_KERNELS_HANDBOOK_DIR", raising=False)
    if not (handbook.DEFAULT_DIR / "index.html").is_file():
        pytest.skip("debian-handbook is not installed")
    handbook.paragraphs.cache_clear()
    ev, cal = handbook.evaluation_text(), handbook.calibration_text()
    assert len(ev) > 400_000 and len(cal) > 400_000  # ~100k tokens each
    assert ev.startswith("I'm pleased to have this opportunity")  # the foreword, not the licence page
    assert set(ev.split("\n\n")).isdisjoint(cal.split("\n\n"))  # no paragraph text in both parts


transformers = pytest.importorskip("transformers")
import smollm2  # noqa: E402


def tiny_llama(vocab=64):
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def test_perplexity_of_uniform_logits_is_the_vocabulary_size():
    model = tiny_llama()
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: each next token costs log(64)
    tokens = torch.randint(0, 64, (100,))
    assert smollm2.perplexity(model, tokens, window=32) == pytest.approx(64, rel=1e-6)


def test_perplexity_is_the_mean_over_non_overlapping_windows():
    model, window = tiny_llama(), 16
    tokens = torch.randint(0, 64, (3 * window + 5,))  # the 5 trailing tokens are dropped
    nll = []
    with torch.no_grad():
        for x in tokens[: 3 * window].view(3, window):
            logp = model(x[None]).logits[0, :-1].log_softmax(-1)
            nll += (-logp.gather(1, x[1:, None])).flatten().tolist()
    assert smollm2.perplexity(model, tokens, window) == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-5)
    with pytest.raises(ValueError, match="at least"):
        smollm2.perplexity(model, tokens[:10], window)


def test_checkpoint_is_converted_once_and_reused(tmp_path, monkeypatch):
    gguf = tmp_path / "pkg" / smollm2.GGUF_NAME
    gguf.parent.mkdir()
    gguf.write_bytes(b"x" * 10)
    monkeypatch.setattr(smollm2, "gguf_path", lambda: gguf)
    monkeypatch.setenv("LAMP_KERNELS_CACHE", str(tmp_path / "cache"))
    calls = []

    class Tokenizer:
        def save_pretrained(self, d):
            (Path(d) / "tokenizer.json").write_text("{}")

    def load_gguf(source):
        calls.append(source)
        return tiny_llama(), Tokenizer()

    monkeypatch.setattr(smollm2, "_load_gguf", load_gguf)
    out = smollm2.checkpoint_dir(verbose=False)
    assert out == tmp_path / "cache" / smollm2.CHECKPOINT and len(calls) == 1
    assert (out / "model.safetensors.index.json").is_file() or (out / "model.safetensors").is_file()
    assert json.loads((out / smollm2.MARKER).read_text()) == {"gguf": gguf.name, "bytes": 10}
    assert smollm2.checkpoint_dir(verbose=False) == out and len(calls) == 1  # reused
    gguf.write_bytes(b"x" * 11)  # another release of the package: converted again
    smollm2.checkpoint_dir(verbose=False)
    assert len(calls) == 2

    def broken(source):
        raise RuntimeError("interrupted")

    gguf.write_bytes(b"x" * 12)
    monkeypatch.setattr(smollm2, "_load_gguf", broken)
    with pytest.raises(RuntimeError):
        smollm2.checkpoint_dir(verbose=False)
    assert not list((tmp_path / "cache").glob(".*converting"))  # no half-written folder left behind

"""English prose that installs offline: *The Debian Administrator's Handbook* (Debian package `debian-handbook`,
English HTML edition), stripped of markup, as a fixed calibration part and a disjoint evaluation part.

The slice, exactly:
  1. Pages in the book's reading order: from ``index.html`` follow each page's ``<link rel="next">``; the
     title page itself (ISBN and licence notices) is left out.
  2. Text of every ``<div class="para">`` (the book's prose paragraphs, including those inside notes and
     sidebars), with code blocks (``<pre>``) left out and whitespace collapsed to single spaces; inline
     markup (``<code>``, ``<acronym>``, links) keeps its text. Paragraphs are joined with blank lines.
  3. The paragraphs are split once by characters: the first half of the book (up to the first paragraph that
     ends past half of the total characters) is the **evaluation** part; the rest is the **calibration**
     part. Token slices are taken from the start of each part, so they never overlap.

`evaluation_tokens` and `calibration_tokens` tokenize a part (no special tokens) and return its first n
tokens. The corpus directory is `LAMP_KERNELS_HANDBOOK_DIR` when set, else the Debian package's location.
"""

from __future__ import annotations

import functools
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import torch

DEFAULT_DIR = Path("/usr/share/doc/debian-handbook/html/en-US")
INSTALL_HINT = ("install it with `apt-get install debian-handbook` (Debian/Ubuntu), or point "
                "LAMP_KERNELS_HANDBOOK_DIR at a copy of its html/en-US directory")


class CorpusMissing(FileNotFoundError):
    pass


def corpus_dir() -> Path:
    d = Path(os.environ.get("LAMP_KERNELS_HANDBOOK_DIR", DEFAULT_DIR))
    if not (d / "index.html").is_file():
        raise CorpusMissing(f"the Debian Administrator's Handbook is not at {d}: {INSTALL_HINT}")
    return d


class _Paragraphs(HTMLParser):
    """Collects the text of each <div class="para">, skipping <pre> blocks inside it."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self.next_page: str | None = None
        self._div_depth = 0  # nesting depth of <div> inside the current paragraph; 0 = not in one
        self._pre_depth = 0
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "link" and attrs.get("rel") == "next":
            self.next_page = attrs.get("href")
        elif tag == "div":
            if self._div_depth:
                self._div_depth += 1
            elif "para" in (attrs.get("class") or "").split():
                self._div_depth, self._text = 1, []
        elif tag == "pre" and self._div_depth:
            self._pre_depth += 1

    def handle_startendtag(self, tag, attrs):
        if tag == "link":
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag == "pre" and self._pre_depth:
            self._pre_depth -= 1
        elif tag == "div" and self._div_depth:
            self._div_depth -= 1
            if not self._div_depth:
                text = " ".join("".join(self._text).split())
                if text:
                    self.paragraphs.append(text)

    def handle_data(self, data):
        if self._div_depth and not self._pre_depth:
            self._text.append(data)


def page_paragraphs(html: str) -> tuple[list[str], str | None]:
    """The prose paragraphs of one page, and the href of the next page (None on the last)."""
    parser = _Paragraphs()
    parser.feed(html)
    parser.close()
    return parser.paragraphs, parser.next_page


@functools.cache
def paragraphs() -> tuple[str, ...]:
    """Every prose paragraph of the book, in reading order."""
    root = corpus_dir()
    page, seen, out = page_paragraphs((root / "index.html").read_text(encoding="utf-8"))[1], set(), []
    while page and page not in seen and re.fullmatch(r"[\w.-]+\.html", page):
        seen.add(page)
        found, page = page_paragraphs((root / page).read_text(encoding="utf-8"))
        out.extend(found)
    return tuple(out)


def _split() -> tuple[str, str]:
    paras = paragraphs()
    half, total = sum(len(p) for p in paras) / 2, 0
    for i, p in enumerate(paras):
        total += len(p)
        if total >= half:
            return "\n\n".join(paras[: i + 1]), "\n\n".join(paras[i + 1:])
    raise CorpusMissing(f"{corpus_dir()}: no prose found")


def evaluation_text() -> str:
    return _split()[0]


def calibration_text() -> str:
    return _split()[1]


def _first_tokens(text: str, tokenizer, n: int, part: str) -> torch.Tensor:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < n:
        raise ValueError(f"the {part} part has {len(ids)} tokens, fewer than the {n} asked for")
    return torch.tensor(ids[:n], dtype=torch.long)


def evaluation_tokens(tokenizer, n: int) -> torch.Tensor:
    """The first n tokens (int64) of the evaluation part, as the given Hugging Face tokenizer splits it."""
    return _first_tokens(evaluation_text(), tokenizer, n, "evaluation")


def calibration_tokens(tokenizer, n: int) -> torch.Tensor:
    """The first n tokens (int64) of the calibration part (disjoint from the evaluation part)."""
    return _first_tokens(calibration_text(), tokenizer, n, "calibration")

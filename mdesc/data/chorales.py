"""Bach's four-part chorales from the ``music21`` corpus, on a 16th-note grid.

Encoding (documented in docs/glassy.md):

* Each chorale becomes an integer array ``grid`` of shape ``(T, 4)``: one row per 16th note
  (``steps_per_quarter = 4`` grid steps per quarter note), one column per voice, ordered
  soprano, alto, tenor, bass. Entries are MIDI pitch numbers, or ``REST = -1``.
  A held note repeats its pitch on every step it sounds; a re-struck note of the same pitch is
  indistinguishable from a held one (the encoding keeps what sounds, not the articulation).
* Voices are the score's four parts sorted by mean pitch, highest first (music21's Humdrum
  chorales list parts in a different order from its MusicXML ones). Scores without exactly four
  parts (19 of the 350 distinct scores, with obbligato instruments) are skipped; 331 remain.
* Chords inside one voice (rare) keep their highest pitch; grace notes (zero duration) are
  dropped; onsets/offsets off the 16th grid (triplets) are rounded to the nearest step.
* For a model, :class:`VoiceVocabulary` turns pitches into per-voice token ids:
  ``0`` is a rest and ``1 + (pitch - low[v])`` a pitch of voice ``v``, so voice ``v`` has
  ``high[v] - low[v] + 2`` classes.

Parsing all chorales takes about half a minute to a minute, so :func:`load_chorales` parses
once and caches the grids in ``$MDESC_CACHE`` (default ``$XDG_CACHE_HOME/mdesc`` or
``~/.cache/mdesc``), written atomically. Tests use a handful of chorales shipped as
``mdesc/data/fixtures/chorales_small.npz`` (:func:`load_fixture_chorales`).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mdesc.store import atomic_write

REST = -1
VOICES = ("soprano", "alto", "tenor", "bass")
STEPS_PER_QUARTER = 4
# Bump when the encoding changes, so stale caches are not reused.
ENCODING_VERSION = 1
FIXTURE_PATH = Path(__file__).resolve().parent / "fixtures" / "chorales_small.npz"


def cache_dir() -> Path:
    """The folder mdesc caches parsed data in: ``$MDESC_CACHE``, else
    ``$XDG_CACHE_HOME/mdesc``, else ``~/.cache/mdesc``."""
    if os.environ.get("MDESC_CACHE"):
        return Path(os.environ["MDESC_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mdesc"


@dataclasses.dataclass
class ChoraleSet:
    """A list of chorales on the 16th-note grid.

    names: corpus names (e.g. ``"bach/bwv269"``), one per chorale.
    grids: int16 arrays ``(T_i, 4)``: MIDI pitch per step and voice (S, A, T, B), ``REST`` = -1.
    """

    names: list[str]
    grids: list[np.ndarray]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.grids):
            raise ValueError(f"{len(self.names)} names but {len(self.grids)} grids")
        for name, g in zip(self.names, self.grids):
            if g.ndim != 2 or g.shape[1] != len(VOICES):
                raise ValueError(f"chorale {name}: grid has shape {g.shape}, expected (T, 4)")

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices: Iterable[int]) -> "ChoraleSet":
        idx = list(indices)
        return ChoraleSet([self.names[i] for i in idx], [self.grids[i] for i in idx])

    def nested_subset(self, n: int, seed: int = 0) -> "ChoraleSet":
        """``n`` chorales chosen by a seeded rule: the first ``n`` of the permutation
        ``numpy.random.default_rng(seed).permutation(len(self))``, kept in their original order.

        For one seed the subsets are nested (the 8 chorales are among the 16, the 16 among the
        32, ...), so training-set sizes differ only by the chorales added. ``n`` must be in
        ``[1, len(self)]``.
        """
        if not 1 <= n <= len(self):
            raise ValueError(f"cannot choose {n} of {len(self)} chorales: pass 1 to {len(self)}")
        perm = np.random.default_rng(seed).permutation(len(self))
        return self.subset(sorted(perm[:n].tolist()))

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple["ChoraleSet", "ChoraleSet"]:
        """Seeded random train/test split (a permutation from ``numpy.random.default_rng(seed)``).

        Returns ``(train, test)``; the test part holds ``round(test_fraction * n)`` chorales.
        """
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
        perm = np.random.default_rng(seed).permutation(len(self))
        n_test = int(round(test_fraction * len(self)))
        return self.subset(sorted(perm[n_test:])), self.subset(sorted(perm[:n_test]))

    def save(self, path: str | os.PathLike) -> None:
        """Write the set as one ``.npz`` (grids concatenated plus lengths), atomically."""
        lengths = np.array([len(g) for g in self.grids], dtype=np.int64)
        flat = (np.concatenate(self.grids).astype(np.int16) if self.grids
                else np.zeros((0, 4), np.int16))
        _atomic_savez(Path(path), grids=flat, lengths=lengths,
                      names=np.array(self.names, dtype=str),
                      encoding_version=np.int64(ENCODING_VERSION),
                      steps_per_quarter=np.int64(STEPS_PER_QUARTER))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ChoraleSet":
        """Read a set written by :meth:`save`; raises ValueError for another encoding version."""
        with np.load(path, allow_pickle=False) as z:
            version = int(z["encoding_version"])
            if version != ENCODING_VERSION:
                raise ValueError(f"{path}: chorale encoding version {version}, this mdesc uses "
                                 f"{ENCODING_VERSION}; delete the file to re-parse")
            lengths = z["lengths"]
            flat = z["grids"]
            names = [str(n) for n in z["names"]]
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        grids = [flat[a:b].copy() for a, b in zip(bounds[:-1], bounds[1:])]
        return cls(names, grids)


@dataclasses.dataclass(frozen=True)
class VoiceVocabulary:
    """Per-voice token ids: 0 = rest, ``1 + pitch - low[v]`` = a pitch of voice v.

    low, high: per-voice lowest and highest MIDI pitch covered (tuples of 4 ints).
    """

    low: tuple[int, ...]
    high: tuple[int, ...]

    @classmethod
    def from_grids(cls, grids: Sequence[np.ndarray]) -> "VoiceVocabulary":
        """The smallest per-voice pitch ranges covering every note in ``grids``."""
        stacked = np.concatenate(grids)
        low, high = [], []
        for v in range(stacked.shape[1]):
            col = stacked[:, v]
            col = col[col != REST]
            if col.size == 0:
                raise ValueError(f"voice {VOICES[v]} has no notes in these chorales")
            low.append(int(col.min()))
            high.append(int(col.max()))
        return cls(tuple(low), tuple(high))

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of classes per voice (pitches in range plus the rest)."""
        return tuple(h - lo + 2 for lo, h in zip(self.low, self.high))

    def encode(self, grid: np.ndarray) -> np.ndarray:
        """Pitch grid ``(T, 4)`` -> token ids ``(T, 4)`` int64. Pitches outside the range raise."""
        grid = np.asarray(grid)
        out = np.zeros(grid.shape, dtype=np.int64)
        for v in range(grid.shape[1]):
            col = grid[:, v].astype(np.int64)
            sounding = col != REST
            bad = sounding & ((col < self.low[v]) | (col > self.high[v]))
            if bad.any():
                raise ValueError(f"voice {VOICES[v]}: pitch {int(col[bad][0])} outside the "
                                 f"vocabulary range {self.low[v]}..{self.high[v]}; build the "
                                 "vocabulary from all chorales you encode")
            out[sounding, v] = col[sounding] - self.low[v] + 1
        return out

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Token ids ``(T, 4)`` -> pitch grid ``(T, 4)`` int16 (inverse of :meth:`encode`)."""
        tokens = np.asarray(tokens)
        out = np.full(tokens.shape, REST, dtype=np.int16)
        for v in range(tokens.shape[1]):
            sounding = tokens[:, v] > 0
            out[sounding, v] = tokens[sounding, v] + self.low[v] - 1
        return out


def padded_tokens(chorales: ChoraleSet, vocab: VoiceVocabulary,
                  max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of a set, padded to a common length, time-major for recurrent nets.

    max_len: keep only each chorale's first ``max_len`` steps (all of it if None).
    Returns ``tokens`` (T, B, 4) int64 (padding = 0 after each chorale's end) and
    ``lengths`` (B,) int64, the valid steps of each chorale.
    """
    if len(chorales) == 0:
        raise ValueError("no chorales to encode")
    enc = [vocab.encode(g[:max_len] if max_len is not None else g) for g in chorales.grids]
    lengths = np.array([len(e) for e in enc], dtype=np.int64)
    tokens = np.zeros((int(lengths.max()), len(enc), len(VOICES)), dtype=np.int64)
    for b, e in enumerate(enc):
        tokens[:len(e), b] = e
    return tokens, lengths


def chunk_tokens(chorales: ChoraleSet, vocab: VoiceVocabulary,
                 length: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every chorale cut into windows of ``length`` next-step predictions (a fixed training set).

    Window k of a chorale holds its tokens ``[k*length, k*length + length + 1)``: the inputs of
    ``length`` steps and their next-step targets, so consecutive windows share one token and
    every transition of every chorale is a target exactly once. A chorale's last window may be
    shorter (padded with 0, marked by its length); windows with fewer than 2 tokens (nothing to
    predict) are dropped. Each window is a training example on its own, started from a zero
    recurrent state.

    Returns ``tokens`` (N, length + 1, 4) int64, ``lengths`` (N,) int64 (valid tokens, 2 to
    length + 1) and ``chorale`` (N,) int64 (index of the source chorale in ``chorales``).
    """
    if length < 1:
        raise ValueError(f"window length must be >= 1, got {length}")
    if len(chorales) == 0:
        raise ValueError("no chorales to encode")
    rows, lens, src = [], [], []
    for i, g in enumerate(chorales.grids):
        enc = vocab.encode(g)
        for start in range(0, max(len(enc) - 1, 0), length):
            piece = enc[start:start + length + 1]
            if len(piece) < 2:
                continue
            row = np.zeros((length + 1, len(VOICES)), dtype=np.int64)
            row[:len(piece)] = piece
            rows.append(row)
            lens.append(len(piece))
            src.append(i)
    if not rows:
        raise ValueError("the chorales are too short to give any window")
    return np.stack(rows), np.array(lens, dtype=np.int64), np.array(src, dtype=np.int64)


def chorale_to_grid(score, steps_per_quarter: int = STEPS_PER_QUARTER) -> np.ndarray:
    """A music21 score with four parts -> int16 pitch grid ``(T, 4)`` (see the module docstring).

    Raises ValueError when the score does not have exactly four parts.
    """
    from music21 import chord, note  # optional (mdesc[music]): imported only to parse scores

    parts = list(score.parts)
    if len(parts) != len(VOICES):
        raise ValueError(f"score has {len(parts)} parts; a four-part chorale is needed")
    total = int(round(float(score.highestTime) * steps_per_quarter))
    columns, means = [], []
    for part in parts:
        col = np.full(total, REST, dtype=np.int16)
        pitches = []
        for el in part.flatten().notesAndRests:
            dur = float(el.quarterLength)
            if dur <= 0:
                continue  # grace note
            start = int(round(float(el.offset) * steps_per_quarter))
            stop = max(start + 1, int(round((float(el.offset) + dur) * steps_per_quarter)))
            if isinstance(el, chord.Chord):
                midi = max(p.midi for p in el.pitches)
            elif isinstance(el, note.Note):
                midi = el.pitch.midi
            else:
                continue  # rest: already REST
            col[start:min(stop, total)] = midi
            pitches.append(midi)
        columns.append(col)
        means.append(np.mean(pitches) if pitches else -np.inf)
    order = np.argsort(means, kind="stable")[::-1]  # highest voice first
    return np.stack([columns[i] for i in order], axis=1)


def corpus_chorale_names() -> list[str]:
    """Names of the Bach chorales music21 ships (``corpus.chorales.Iterator``, Riemenschneider
    numbering), e.g. ``"bach/bwv269"``."""
    try:
        from music21 import corpus
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the Bach chorales come from the music21 package: "
                          "pip install music21 (or pip install mdesc[music])") from e
    return [str(n) for n in corpus.chorales.Iterator(returnType="filename")]


def parse_chorales(names: Sequence[str] | None = None, limit: int | None = None,
                   progress: bool = True) -> ChoraleSet:
    """Parse chorales from the music21 corpus into a :class:`ChoraleSet` (no caching).

    names: corpus names to parse (default: all of :func:`corpus_chorale_names`, in order);
    limit: parse only the first ``limit`` of them. Scores without four parts are skipped.
    """
    from music21 import corpus

    if names is None:
        names = corpus_chorale_names()
    names = list(names)[:limit] if limit is not None else list(names)
    seen: set[str] = set()
    kept_names, grids = [], []
    iterator: Iterable[str] = names
    if progress:
        from tqdm import tqdm
        iterator = tqdm(names, desc="parsing chorales", unit="chorale")
    for name in iterator:
        if name in seen:
            continue
        seen.add(name)
        score = corpus.parse(name)
        if len(score.parts) != len(VOICES):
            continue
        grids.append(chorale_to_grid(score))
        kept_names.append(name)
    return ChoraleSet(kept_names, grids)


def load_chorales(cache: str | os.PathLike | None = None, refresh: bool = False,
                  progress: bool = True) -> ChoraleSet:
    """All four-part Bach chorales of music21, parsed once and cached.

    cache: the ``.npz`` cache file (default ``cache_dir() / "bach_chorales_v{N}.npz"``);
    refresh: re-parse even if the cache exists. The cache is written atomically, so an
    interrupted parse leaves no half-written file.
    """
    path = Path(cache) if cache is not None else cache_dir() / f"bach_chorales_v{ENCODING_VERSION}.npz"
    if path.exists() and not refresh:
        try:
            return ChoraleSet.load(path)
        except ValueError:
            pass  # stale encoding: re-parse below
    chorales = parse_chorales(progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    chorales.save(path)
    return chorales


def load_fixture_chorales() -> ChoraleSet:
    """The few chorales shipped with mdesc for tests and quick demos (no music21 needed)."""
    return ChoraleSet.load(FIXTURE_PATH)


def _atomic_savez(path: Path, **arrays) -> None:
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))

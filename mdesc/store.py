"""The run store: every file a run writes goes through here.

One place for what all three studies need from a run folder:

- **atomic writes** — a file is written to ``.<name>.<random>.tmp`` in its own folder (listings
  that skip dot-files never see it), flushed, given the usual permissions and moved onto its name
  with ``os.replace``: readers see the old file or the new one, never half of one, and an
  interrupted (even killed) write leaves nothing behind but, at worst, a dot-file;
- **one save format** — safetensors for tensors and arrays (with a JSON metadata header), JSON
  for everything else, through one sanitiser (:func:`to_json`: numpy/torch scalars and arrays,
  dataclasses, paths; NaN and inf become ``null``). **No pickle**: nothing here unpickles, and
  :func:`read_checkpoint` reads PyTorch ``.pt`` files with ``weights_only=True`` only;
- **one checkpoint reader** — :func:`read_checkpoint` finds the weights in the files people save
  (safetensors, bare state dicts, ``{"model": ..., "optimizer": ...}``, Lightning ``.ckpt``) and
  fails with one error type, :class:`CheckpointError`, whose message names the file and the fix;
- **one settings check** — :meth:`RunFolder.open` records a run's settings the first time and,
  on every later call, compares them with what is asked for and raises :class:`SettingsMismatch`
  with one message that names every differing field;
- :class:`RunFolder` names the paths of a run (``run.path("sweep", "records")``) and keeps
  per-item records (one small JSON file per checkpoint, per width, per rate...) so that a killed
  job resumes where it stopped and every item is stored exactly once.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Mapping

from mdesc.errors import UserError

SETTINGS_FILE = "settings.json"


class StoreError(UserError):
    """A run folder or file that cannot be used as asked; the message says why and what to do."""


class SettingsMismatch(StoreError):
    """A folder holds a run made with other settings than the ones asked for."""


# ----------------------------------------------------------------------------- atomic writes

def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, move it onto ``path``.

    ``suffix`` lets writers that infer the format from the name (matplotlib) see one, e.g.
    ``".tmp.png"``.  On an exception the temporary file is removed and nothing is replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(f)`` on a binary file object, then move the result onto ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# ----------------------------------------------------------------------------- JSON

def to_json(obj: Any) -> Any:
    """``obj`` as plain JSON types: the one sanitiser every saved JSON file goes through.

    Dataclasses become dicts, numpy/torch arrays lists, numpy/torch scalars Python numbers,
    paths strings, tuples lists; non-finite floats become ``None`` (strict JSON has no NaN).
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, (str, type(None))):
        return obj
    if isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    tolist = getattr(obj, "tolist", None)  # numpy arrays/scalars, torch tensors
    if callable(tolist):
        return to_json(tolist())
    raise TypeError(f"cannot store a {type(obj).__name__} as JSON: {obj!r}")


def dumps(obj: Any, indent: int | None = 1) -> str:
    """JSON text of ``to_json(obj)`` (strict: no NaN), ending in a newline."""
    return json.dumps(to_json(obj), indent=indent, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    """Atomically write ``obj`` (through :func:`to_json`) as JSON."""
    atomic_write_text(path, dumps(obj, indent))


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a damaged one is a :class:`StoreError` naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{path} is not valid JSON ({e}); delete it to let the run rewrite it") from e


# ----------------------------------------------------------------------------- tensors

def save_tensors(path: str | os.PathLike, tensors: Mapping[str, Any],
                 meta: Mapping[str, Any] | None = None) -> None:
    """Atomically save named tensors or numpy arrays as one safetensors file.

    ``meta`` (any JSON-able mapping) is stored in the file's header under ``"mdesc"``.
    """
    import numpy as np
    import torch
    from safetensors.torch import save

    out = {}
    for name, value in tensors.items():
        t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
        out[str(name)] = t.detach().cpu().contiguous()
    header = {"mdesc": json.dumps(to_json(dict(meta or {})), allow_nan=False)}
    atomic_write_bytes(path, save(out, metadata=header))


def load_tensors(path: str | os.PathLike, device: str = "cpu",
                 metadata_only: bool = False) -> tuple[dict, dict]:
    """``(tensors, meta)`` from a file written by :func:`save_tensors` (torch tensors).

    Only the safetensors format is read (no pickle); a damaged file is a :class:`StoreError`.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            header = f.metadata() or {}
            tensors = {} if metadata_only else {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise StoreError(f"{path} is not a readable safetensors file ({e})") from e
    meta = json.loads(header["mdesc"]) if "mdesc" in header else dict(header)
    return tensors, meta


class CheckpointError(StoreError):
    """A checkpoint that cannot be read as weights; the message names the file and the fix."""


CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
# Where people keep the weights inside a saved dict, in the order they are looked for:
# Lightning (.ckpt) and most scripts use "state_dict"; PyTorch's tutorials "model_state_dict";
# plain loops {"model": ..., "optimizer": ...}.
STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module", "weights")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _first_line(e: BaseException) -> str:
    text = _ANSI.sub("", str(e)).strip()
    return (text.splitlines() or [type(e).__name__])[0][:200]


def load_torch_file(path: str | os.PathLike, device: str = "cpu") -> Any:
    """Whatever a PyTorch file holds (a state dict, a tensor, a dict of them), read with
    ``torch.load(weights_only=True)``: nothing is executed; a file that would need code to
    unpickle, or is not a PyTorch file, is a :class:`CheckpointError` naming it."""
    import pickle
    import zipfile

    import torch

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        text = _ANSI.sub("", str(e))
        found = re.search(r"GLOBAL ([\w.]+)", text)
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        what = (f"it needs the class {found.group(1)}" if found else
                detail.group(1).strip() if detail else _first_line(e))
        raise CheckpointError(
            f"{path} could not be read as a weights-only PyTorch file ({what}); mdesc never "
            "unpickles code. If it holds a whole saved model or other Python objects, save the "
            "weights instead (torch.save(model.state_dict(), path), or a safetensors file); "
            "otherwise check that it is a checkpoint at all") from e
    except (RuntimeError, EOFError, OSError, IndexError, ValueError, KeyError,
            zipfile.BadZipFile) as e:  # torch raises several types for files that are not its own
        raise CheckpointError(f"{path} is not a readable PyTorch file ({type(e).__name__}: "
                              f"{_first_line(e)}); is it truncated, or another format with a "
                              "PyTorch-like name?") from e


def _find_state(obj: Any, path: Path, state_key: str | None) -> tuple[dict, str | None]:
    """The state dict inside a loaded PyTorch object, and the key it was found under."""
    if state_key is not None:
        where = "its top level"
        for part in state_key.split("."):
            if not isinstance(obj, Mapping) or part not in obj:
                keys = sorted(map(str, obj))[:12] if isinstance(obj, Mapping) else type(obj).__name__
                raise CheckpointError(f"{path} has no entry {state_key!r} ({where}: {keys}); "
                                      "name the entry that holds the weights")
            obj, where = obj[part], f"under {part!r}"
        if not _is_state_dict(obj):
            raise CheckpointError(f"{path}[{state_key!r}] is not a state dict (a mapping of names "
                                  "to tensors)")
        return dict(obj), state_key
    if _is_state_dict(obj):
        return dict(obj), None
    if isinstance(obj, Mapping):
        for key in STATE_KEYS:
            if _is_state_dict(obj.get(key)):
                return dict(obj[key]), key
        nested = [str(k) for k, v in obj.items() if _is_state_dict(v)]
        if len(nested) == 1:
            return dict(obj[nested[0]]), nested[0]
        keys = sorted(map(str, obj))[:12]
        hint = (f"several entries hold tensors ({nested}): name one with state_key (--state-key)"
                if nested else "none of its entries is a mapping of names to tensors")
        raise CheckpointError(f"{path} holds a dict without an obvious state dict (top level: "
                              f"{keys}); {hint}")
    raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict; save "
                          "model.state_dict() (a mapping of names to tensors)")


def _scalar_meta(obj: Any, used: str | None) -> dict[str, Any]:
    """JSON-able scalars saved beside the weights ({"epoch": 3, ...}), as metadata."""
    if not isinstance(obj, Mapping):
        return {}
    return {str(k): v for k, v in obj.items()
            if k != used and isinstance(v, (int, float, str, bool)) and not isinstance(k, tuple)}


def read_checkpoint(path: str | os.PathLike, *, state_key: str | None = None,
                    strip_prefix: str | None = None, device: str = "cpu",
                    metadata_only: bool = False) -> tuple[dict, dict]:
    """The one checkpoint reader: ``(state_dict, metadata)`` of a weights file, nothing unpickled.

    - ``.safetensors``: the tensors, and the header's metadata (the ``"mdesc"`` entry of files
      written by :func:`save_tensors`, else every entry, each parsed from JSON where it is JSON);
    - ``.pt``/``.pth``/``.bin``/``.ckpt`` (or any other name): ``torch.load(weights_only=True)``,
      which rebuilds only tensors and plain containers.  A bare state dict is taken as it is; a
      dict holding one (``{"model": ..., "optimizer": ...}``, Lightning's ``{"state_dict": ...}``,
      ``{"model_state_dict": ...}``) is searched under :data:`STATE_KEYS`, then for a single entry
      that is a state dict; ``state_key`` (dotted: ``"ema.model"``) names the entry instead.  The
      metadata then holds the file's top-level scalars (``epoch``, ``global_step``, ...) and
      ``"state_key"``, the entry the weights came from (``None``: the file was the state dict).

    ``strip_prefix`` removes a prefix from every key (``"module."`` of DDP).  ``metadata_only``:
    ``({}, metadata)``, reading only a safetensors file's header.  Every failure is a
    :class:`CheckpointError` that names the file and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist" if not path.exists()
                              else f"checkpoint {path} is not a file")
    if path.suffix == ".safetensors":
        try:
            state, meta = load_tensors(path, device, metadata_only=metadata_only)
        except StoreError as e:
            raise CheckpointError(str(e)) from e
        if "mdesc" not in meta:
            meta = {k: _json_or_text(v) for k, v in meta.items()}
        if not state and not metadata_only:
            raise CheckpointError(f"{path} holds no tensors")
    else:
        obj = load_torch_file(path, device)
        state, used = _find_state(obj, path, state_key)
        meta = dict(_scalar_meta(obj, used), state_key=used)
        state = {} if metadata_only else state
    if strip_prefix:
        state = {k[len(strip_prefix):] if k.startswith(strip_prefix) else k: v
                 for k, v in state.items()}
    return state, meta


def load_state_dict(path: str | os.PathLike, device: str = "cpu") -> dict:
    """The weights of a checkpoint (:func:`read_checkpoint` without the metadata)."""
    return read_checkpoint(path, device=device)[0]


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


# ----------------------------------------------------------------------------- settings

def _differences(path: str, a: Any, b: Any, out: list[str]) -> None:
    """Append ``path: on disk A, asked for B`` for every leaf where ``a`` and ``b`` differ."""
    if a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            _differences(f"{path}.{key}" if path else str(key), a.get(key, "<absent>"),
                         b.get(key, "<absent>"), out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _differences(f"{path}[{i}]", x, y, out)
    else:
        show = lambda v: repr(v) if len(repr(v)) <= 120 else repr(v)[:117] + "..."  # noqa: E731
        out.append(f"{path}: on disk {show(a)}, asked for {show(b)}")


def settings_differences(stored: Mapping[str, Any], wanted: Mapping[str, Any],
                         ignore: Iterable[str] = ()) -> list[str]:
    """Human-readable list of the fields where ``wanted`` differs from ``stored``: nested
    settings are compared field by field (``model.hidden_size: on disk 60, asked for 64``)."""
    stored, wanted, ignore = to_json(stored), to_json(wanted), set(ignore)
    diffs: list[str] = []
    for key in sorted(set(stored) | set(wanted)):
        if key not in ignore:
            _differences(key, stored.get(key, "<absent>"), wanted.get(key, "<absent>"), diffs)
    return diffs


def check_settings(where: str | os.PathLike, stored: Mapping[str, Any], wanted: Mapping[str, Any],
                   ignore: Iterable[str] = ()) -> None:
    """The one "these settings differ from the run on disk" check (raises SettingsMismatch)."""
    diffs = settings_differences(stored, wanted, ignore)
    if diffs:
        raise SettingsMismatch(
            f"{where} holds a run made with other settings ({'; '.join(diffs)}). Use the same "
            "settings to resume it, or choose another output folder (or delete this one) to "
            "start afresh")


# ----------------------------------------------------------------------------- run folders

_KEY = re.compile(r"^[A-Za-z0-9_.=+-]+$")


class RunFolder:
    """A run's folder: names its paths, records its settings once, keeps per-item records.

    >>> run = RunFolder("runs/glassy-d1")
    >>> settings = run.open({"depth": 1, "steps": 10**5}, mutable=("threads",))
    >>> run.write_record("width", "w=8", {...}); run.records("width")
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    def path(self, *parts: str) -> Path:
        """A path inside the run (folders are not created)."""
        return self.root.joinpath(*parts)

    # settings -------------------------------------------------------------------------------
    @property
    def settings_path(self) -> Path:
        return self.root / SETTINGS_FILE

    def exists(self) -> bool:
        """Whether a run has been started here (its settings are recorded)."""
        return self.settings_path.is_file()

    def settings(self) -> dict:
        if not self.exists():
            raise StoreError(f"{self.root} holds no run (no {SETTINGS_FILE}); start one first")
        return read_json(self.settings_path)

    def open(self, settings: Mapping[str, Any], mutable: Iterable[str] = ()) -> dict:
        """Start a run with ``settings``, or check them against the run already here.

        Fields named in ``mutable`` (e.g. a thread count, a longer epoch budget) may change
        between calls; the stored settings are updated with their new values.  Anything else
        that differs raises :class:`SettingsMismatch`.  Returns the settings as stored.
        """
        mutable = tuple(mutable)
        wanted = to_json(dict(settings))
        if self.exists():
            stored = self.settings()
            check_settings(self.root, stored, wanted, ignore=mutable)
            if any(stored.get(k) != wanted.get(k) for k in mutable):
                stored.update({k: wanted[k] for k in mutable if k in wanted})
                write_json(self.settings_path, stored)
            return stored
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root} exists and is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.settings_path, wanted)
        return wanted

    # plain files ------------------------------------------------------------------------------
    def write_json(self, name: str, obj: Any, indent: int | None = 1) -> Path:
        path = self.path(name)
        write_json(path, obj, indent)
        return path

    def read_json(self, name: str) -> Any:
        return read_json(self.path(name))

    def save_tensors(self, name: str, tensors: Mapping[str, Any],
                     meta: Mapping[str, Any] | None = None) -> Path:
        path = self.path(name)
        save_tensors(path, tensors, meta)
        return path

    def load_tensors(self, name: str, device: str = "cpu") -> tuple[dict, dict]:
        return load_tensors(self.path(name), device)

    # per-item records -------------------------------------------------------------------------
    def _record_path(self, kind: str, key: str) -> Path:
        key = str(key)
        if not _KEY.match(key):
            raise StoreError(f"record key {key!r} may only use letters, digits and _ . = + -")
        return self.root / kind / f"{key}.json"

    def has_record(self, kind: str, key: str) -> bool:
        return self._record_path(kind, key).is_file()

    def write_record(self, kind: str, key: str, obj: Any) -> None:
        """Store one item's result as ``<kind>/<key>.json`` (atomic; rewriting replaces it)."""
        write_json(self._record_path(kind, key), obj, indent=None)

    def read_record(self, kind: str, key: str) -> Any:
        return read_json(self._record_path(kind, key))

    def records(self, kind: str) -> dict[str, Any]:
        """Every stored record of ``kind``, by key (sorted by key; numbers in keys sort as numbers).

        A damaged record file (it cannot be half-written, but a user may edit one) is a
        :class:`StoreError` that names it.
        """
        folder = self.root / kind
        if not folder.is_dir():
            return {}
        paths = [p for p in folder.glob("*.json") if not p.name.startswith(".")]
        return {p.stem: read_json(p) for p in sorted(paths, key=lambda p: natural_key(p.stem))}


def natural_key(text: str) -> list:
    """Sort key that orders the integers inside names numerically (epoch_9 < epoch_10)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]

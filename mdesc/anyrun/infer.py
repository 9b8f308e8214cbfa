"""The architecture of a plain recurrent stack, read off a checkpoint's own tensor shapes.

A checkpoint of an Embedding -> LSTM/GRU/RNN -> Linear model says everything
:class:`~mdesc.anyrun.sources.RecurrentStack` needs, whatever its modules are called:

- the recurrent module: the one prefix with ``weight_ih_l0`` and ``weight_hh_l0``; its hidden
  size is ``weight_hh_l0``'s width, its cell the ratio of rows to hidden size (4: LSTM, 3: GRU,
  1: Elman RNN; a file cannot tell ``tanh`` from ``relu``, so ``rnn_tanh`` is assumed and said),
  its layers the ``weight_hh_l<n>`` it holds, its bias whether ``bias_ih_l0`` is there;
- the embedding: a lone 2-D ``weight`` as wide as the recurrent input (its rows: the
  vocabulary); without one the inputs are features of that width;
- the readout: a 2-D ``weight`` as wide as the hidden state (its rows: the output size); none:
  no readout.

Flags the user gives win over what is read; :func:`infer_stack` returns the flags and one line
per inferred value, which ``mdesc analyse-run`` prints.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from mdesc.anyrun.sources import CELLS, SourceError, _prefix_groups

ARCHITECTURE = ("cell", "vocab_size", "embed_dim", "input_size", "hidden_size", "num_layers",
                "output_size", "bias")
_GATES = {4: "lstm", 3: "gru", 1: "rnn_tanh"}
_LAYER = re.compile(r"^weight_hh_l(\d+)(_reverse)?$")


class ArchitectureError(SourceError):
    """The architecture cannot be read off the checkpoint; the message says which flags to give."""


def _recurrent(groups: dict[str, dict[str, Any]], where: str) -> str:
    found = [p for p, g in groups.items() if "weight_ih_l0" in g and "weight_hh_l0" in g]
    if len(found) != 1:
        what = (f"{len(found)} recurrent modules ({', '.join(p or '<top level>' for p in found)})"
                if found else "no recurrent module (no weight_ih_l0 / weight_hh_l0 tensors)")
        raise ArchitectureError(
            f"cannot read the architecture off {where}: it holds {what}. Describe the model "
            "with --factory PKG.MODULE:CALLABLE (or the architecture flags --cell "
            "--hidden-size --vocab-size/--embed-dim or --input-size)")
    return found[0]


def _rnn_flags(g: dict[str, Any], prefix: str, where: str) -> dict[str, Any]:
    if any(k.endswith("_reverse") for k in g) or any(k.startswith("weight_hr") for k in g):
        raise ArchitectureError(f"{where}: the recurrent module {prefix!r} is bidirectional or "
                                "has a projection (proj_size), which mdesc does not analyse")
    hidden = int(g["weight_hh_l0"].shape[1])
    rows = int(g["weight_hh_l0"].shape[0])
    if rows % hidden or rows // hidden not in _GATES:
        raise ArchitectureError(f"{where}: {prefix}.weight_hh_l0 has shape "
                                f"{tuple(g['weight_hh_l0'].shape)}, which is no LSTM, GRU or RNN")
    layers = 1 + max(int(m.group(1)) for k in g if (m := _LAYER.match(k)))
    return {"cell": _GATES[rows // hidden], "hidden_size": hidden, "num_layers": layers,
            "bias": "bias_ih_l0" in g, "_width": int(g["weight_ih_l0"].shape[1])}


def _two_d(groups, skip, width, keys) -> list[tuple[str, Any]]:
    return [(p, g["weight"]) for p, g in groups.items()
            if p != skip and set(g) <= keys and "weight" in g
            and getattr(g["weight"], "dim", lambda: 0)() == 2 and g["weight"].shape[1] == width]


def _by_position(cands: list, order: list[str], rec: str, before: bool) -> list:
    """Of several candidates, those registered before (embedding) or after (readout) the
    recurrent module, when that singles one out."""
    if len(cands) < 2:
        return cands
    kept = [c for c in cands if (order.index(c[0]) < order.index(rec)) == before]
    return kept if len(kept) == 1 else cands


def read_architecture(state: Mapping[str, Any], where: str = "the checkpoint") -> dict[str, Any]:
    """RecurrentStack flags read off ``state``'s shapes (see the module doc); raises
    :class:`SourceError` naming ``where`` when they cannot be read."""
    groups = _prefix_groups(state)
    rec = _recurrent(groups, where)
    flags = _rnn_flags(groups[rec], rec, where)
    width = flags.pop("_width")
    order = list(groups)  # modules in the order the model registered them
    emb = _by_position(_two_d(groups, rec, width, {"weight"}), order, rec, before=True)
    if len(emb) > 1:
        raise ArchitectureError(
            f"cannot read the architecture off {where}: several tensors could be the embedding "
            f"({', '.join(p for p, _ in emb)}); give --vocab-size and --embed-dim, or --factory")
    if emb:
        flags.update(vocab_size=int(emb[0][1].shape[0]), embed_dim=width, input_size=None)
    else:
        flags.update(vocab_size=None, embed_dim=None, input_size=width)
    out = [o for o in _two_d(groups, rec, flags["hidden_size"], {"weight", "bias"})
           if not emb or o[0] != emb[0][0]]
    out = _by_position(out, order, rec, before=False)
    if len(out) > 1:
        raise ArchitectureError(
            f"cannot read the architecture off {where}: several tensors could be the readout "
            f"({', '.join(p for p, _ in out)}); give --output-size, or --factory")
    flags["output_size"] = int(out[0][1].shape[0]) if out else 0
    return flags


def infer_stack(state: Mapping[str, Any], given: Mapping[str, Any] | None = None,
                where: str = "the checkpoint") -> tuple[dict[str, Any], list[str]]:
    """``(flags, said)``: RecurrentStack flags, the ``given`` ones (not None) kept and the rest
    read off ``state`` (:func:`read_architecture`); ``said`` names each inferred value."""
    given = {k: v for k, v in dict(given or {}).items() if v is not None}
    unknown = sorted(set(given) - set(ARCHITECTURE))
    if unknown:
        raise SourceError(f"unknown architecture fields {unknown}; use {', '.join(ARCHITECTURE)}")
    if given.get("cell") is not None and given["cell"] not in CELLS:
        raise SourceError(f"cell must be one of {', '.join(CELLS)}, got {given['cell']!r}")
    read = read_architecture(state, where)
    if "input_size" in given:  # features, whatever the file suggests
        given.setdefault("vocab_size", None)
        given.setdefault("embed_dim", None)
    elif "vocab_size" in given or "embed_dim" in given:
        given.setdefault("input_size", None)
    flags = {**read, **given}
    said = [f"{k}={read[k]}" for k in ARCHITECTURE
            if k not in given and read.get(k) is not None and k != "bias"]
    if "bias" not in given and not read["bias"]:
        said.append("bias=False")
    if "cell" not in given and read["cell"] == "rnn_tanh":
        said.append("(an Elman RNN's nonlinearity is not in the file: tanh assumed; pass "
                    "--cell rnn_relu for ReLU)")
    return flags, said

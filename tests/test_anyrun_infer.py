"""The architecture of an Embedding -> recurrent -> Linear model read off its checkpoint's shapes
(mdesc.anyrun.infer): every cell, depth, width, with and without embedding and readout, whatever
the modules are called; flags given win; what cannot be read is refused with the flags to give."""
import pytest
import torch
from torch import nn

from mdesc.anyrun import RecurrentStack
from mdesc.anyrun.infer import ArchitectureError, infer_stack
from mdesc.anyrun.sources import fit_state_dict


class UserModel(nn.Module):
    def __init__(self, cell, vocab, width, hidden, layers, out, bias=True):
        super().__init__()
        if vocab:
            self.tok = nn.Embedding(vocab, width)
        kind = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN}[cell]
        self.core = kind(width, hidden, layers, bias=bias)
        if out:
            self.head = nn.Linear(hidden, out)


CASES = [("lstm", 11, 5, 5, 2, 3, True), ("gru", 30, 4, 9, 1, 30, True),
         ("rnn_tanh", 7, 3, 6, 3, 1, False), ("gru", None, 2, 8, 1, 0, True),
         ("lstm", None, 6, 4, 1, 2, False)]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}-{c[4]}" for c in CASES])
def test_read_off_the_shapes_and_loaded(case):
    cell, vocab, width, hidden, layers, out, bias = case
    state = UserModel(*case).state_dict()
    flags, said = infer_stack(state)
    assert flags == dict(cell=cell, vocab_size=vocab, embed_dim=width if vocab else None,
                         input_size=None if vocab else width, hidden_size=hidden,
                         num_layers=layers, output_size=out, bias=bias)
    assert f"hidden_size={hidden}" in said and f"cell={cell}" in said
    assert ("bias=False" in said) == (not bias)
    stack = RecurrentStack(**flags)
    stack.load_state_dict(fit_state_dict(state, stack))  # the names differ; the roles fit


def test_given_flags_win_and_the_rest_is_read():
    state = UserModel("lstm", 11, 5, 8, 2, 3).state_dict()
    flags, said = infer_stack(state, {"output_size": 4, "cell": "gru"})
    assert flags["output_size"] == 4 and flags["cell"] == "gru" and flags["hidden_size"] == 8
    assert not any(s.startswith(("output_size", "cell")) for s in said)
    flags, _ = infer_stack(state, {"input_size": 5})  # features, whatever the file holds
    assert flags["vocab_size"] is None and flags["embed_dim"] is None


@pytest.mark.parametrize("state, message", [
    ({"fc.weight": torch.zeros(2, 3)}, "no recurrent module"),
    ({**{f"a.{k}": v for k, v in nn.GRU(2, 3).state_dict().items()},
      **{f"b.{k}": v for k, v in nn.GRU(2, 3).state_dict().items()}}, "2 recurrent modules"),
    (nn.GRU(2, 3, bidirectional=True).state_dict(), "bidirectional"),
    (nn.LSTM(2, 4, proj_size=2).state_dict(), "projection"),
])
def test_what_cannot_be_read_is_refused(state, message):
    with pytest.raises(ArchitectureError, match=message):
        infer_stack(state, where="ck.pt")


def test_unknown_fields_and_cells_are_named():
    state = UserModel("gru", 5, 2, 3, 1, 1).state_dict()
    with pytest.raises(ValueError, match="unknown architecture fields"):
        infer_stack(state, {"hidden": 3})
    with pytest.raises(ValueError, match="cell must be one of"):
        infer_stack(state, {"cell": "transformer"})

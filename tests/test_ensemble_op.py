"""The extension's ensemble recurrence (issue 24): torch.ops.mdesc.ensemble_rnn_forward /
ensemble_rnn_backward behind mdesc.ensemble._op, checked against the autograd reference
(``recurrence_torch``), against PyTorch's own nn.LSTM / nn.GRU / nn.RNN member by member, by
gradcheck, and for readable errors on bad input."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mdesc.ensemble import _op
from mdesc.ensemble.recurrent import CELL_GATES, ensemble_recurrent

CELLS = list(CELL_GATES)
#: devices whose build has the ensemble op (CUDA joins when it is compiled and a GPU is present)
OP_DEVICES = [torch.device("cpu")] + (
    [torch.device("cuda")] if torch.cuda.is_available() and _op.has_kernel("cuda") else [])
op_devices = pytest.mark.parametrize("device", OP_DEVICES, ids=[d.type for d in OP_DEVICES])

pytestmark = pytest.mark.skipif(not _op.has_kernel("cpu"), reason="mdesc extension without the ensemble op")


def _inputs(cell, E, T, B, I, H, dtype, device, seed, scale=1.0):
    """x, w_ih, w_hh, b_ih, b_hh of E models (PyTorch-like init, times scale) and a dL/dh_all."""
    g = torch.Generator().manual_seed(seed)
    GH = CELL_GATES[cell] * H
    k = scale / H ** 0.5

    def u(*shape, s=k):
        return ((torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * s).to(dtype=dtype, device=device)

    args = [u(E, T, B, I, s=1.0), u(E, GH, I), u(E, GH, H), u(E, GH), u(E, GH)]
    return args, u(E, T, B, H, s=1.0)


def _run(args, dy, cell, backend):
    leaves = [a.detach().clone().requires_grad_() for a in args]
    h = ensemble_recurrent(*leaves, cell, backend=backend)
    return (h.detach(),) + torch.autograd.grad(h, leaves, dy)


NAMES = ("h_all", "dx", "dw_ih", "dw_hh", "db_ih", "db_hh")


def _assert_close_scaled(got, want, rel, what):
    """|got - want| <= rel * max(1, max|want|) elementwise (relative to the tensor's scale)."""
    for name, a, b in zip(NAMES, got, want):
        scale = max(1.0, b.abs().max().item())
        err = (a.to(b.dtype) - b).abs().max().item()
        assert err <= rel * scale, f"{what}: {name} differs by {err:.3g} (scale {scale:.3g}, allowed {rel:g})"


shapes = dict(cell=st.sampled_from(CELLS), E=st.integers(1, 3), T=st.integers(1, 9), B=st.integers(1, 4),
              I=st.integers(1, 5), H=st.integers(1, 20), seed=st.integers(0, 2 ** 16))


@op_devices
@settings(max_examples=30)
@given(**shapes)
def test_float64_equals_torch_reference(device, cell, E, T, B, I, H, seed):
    args, dy = _inputs(cell, E, T, B, I, H, torch.float64, device, seed, scale=2.0)
    _assert_close_scaled(_run(args, dy, cell, "extension"), _run(args, dy, cell, "torch"), 1e-12,
                         f"{cell} E{E} T{T} B{B} I{I} H{H}")


@op_devices
@settings(max_examples=20)
@given(**shapes)
def test_float32_close_to_float64(device, cell, E, T, B, I, H, seed):
    """float32 against the float64 reference: rounding only (2e-4 of the scale; measured ~1e-6)."""
    args, dy = _inputs(cell, E, T, B, I, H, torch.float64, device, seed, scale=2.0)
    want = _run(args, dy, cell, "torch")
    got = _run([a.float() for a in args], dy.float(), cell, "extension")
    _assert_close_scaled(got, want, 2e-4, f"float32 {cell} E{E} T{T} B{B} I{I} H{H}")


@op_devices
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("H", [8, 16, 17, 37, 60])
def test_whole_vectors_and_tails(device, cell, H):
    """Hidden sizes around the CPU kernel's vector chunks (16 float32 / 8 float64 units: whole
    chunks read in place, the rest through padded scratch) in both dtypes."""
    args, dy = _inputs(cell, 2, 6, 3, 4, H, torch.float64, device, seed=H, scale=2.0)
    want = _run(args, dy, cell, "torch")
    _assert_close_scaled(_run(args, dy, cell, "extension"), want, 1e-12, f"float64 {cell} H{H}")
    got = _run([a.float() for a in args], dy.float(), cell, "extension")
    _assert_close_scaled(got, want, 2e-4, f"float32 {cell} H{H}")


MODULES = {"lstm": lambda I, H: torch.nn.LSTM(I, H), "gru": lambda I, H: torch.nn.GRU(I, H),
           "rnn_tanh": lambda I, H: torch.nn.RNN(I, H, nonlinearity="tanh"),
           "rnn_relu": lambda I, H: torch.nn.RNN(I, H, nonlinearity="relu")}


@op_devices
@pytest.mark.parametrize("cell", CELLS)
def test_each_member_equals_its_torch_module(device, cell):
    """Member e of the ensemble is PyTorch's nn module with member e's weights: outputs and every
    parameter's gradient (float64)."""
    E, T, B, I, H = 3, 11, 4, 5, 7
    torch.manual_seed(1)
    mods = [MODULES[cell](I, H).double().to(device) for _ in range(E)]
    x = torch.randn(E, T, B, I, dtype=torch.float64, device=device)
    dy = torch.randn(E, T, B, H, dtype=torch.float64, device=device)
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    stacked = [torch.stack([getattr(m, n).detach() for m in mods]).requires_grad_() for n in names]
    xe = x.clone().requires_grad_()
    h = ensemble_recurrent(xe, *stacked, cell, backend="extension")
    h.backward(dy)
    for e, m in enumerate(mods):
        xm = x[e].clone().requires_grad_()
        out, _ = m(xm)
        out.backward(dy[e])
        torch.testing.assert_close(h[e].detach(), out.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(xe.grad[e], xm.grad, rtol=1e-12, atol=1e-12)
        for n, s in zip(names, stacked):
            torch.testing.assert_close(s.grad[e], getattr(m, n).grad, rtol=1e-12, atol=1e-12, msg=f"member {e} {n}")


@op_devices
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck(device, cell):
    args, _ = _inputs(cell, 2, 3, 2, 2, 3, torch.float64, device, seed=5, scale=2.0)
    args = [a.requires_grad_() for a in args]
    assert torch.autograd.gradcheck(lambda *a: ensemble_recurrent(*a, cell, backend="extension"), args)


@pytest.mark.parametrize("cell", CELLS)
def test_opcheck(cell):
    """Schemas, fake kernels and dispatch agree (torch.library.opcheck) for both ops."""
    args, dy = _inputs(cell, 2, 3, 2, 2, 3, torch.float64, "cpu", seed=7)
    x, w_ih, w_hh, b_ih, b_hh = args
    xproj = torch.baddbmm(b_ih.unsqueeze(1), x.reshape(2, 6, 2), w_ih.transpose(1, 2)).view(2, 3, 2, -1)
    torch.library.opcheck(torch.ops.mdesc.ensemble_rnn_forward.default, (xproj, w_hh, b_hh, cell))
    h_all, saved = torch.ops.mdesc.ensemble_rnn_forward(xproj, w_hh, b_hh, cell)
    assert saved.shape[-1] == _op.SAVED_SLOTS[cell] * 3
    torch.library.opcheck(torch.ops.mdesc.ensemble_rnn_backward.default, (dy, h_all, saved, w_hh, cell))


def test_gru_dhproj_differs_from_dxproj_only_in_n_block():
    """dhproj = dxproj except GRU's n block, where it is dxproj_n * r (the op's contract)."""
    args, dy = _inputs("gru", 2, 4, 3, 2, 5, torch.float64, "cpu", seed=3, scale=2.0)
    x, w_ih, w_hh, b_ih, b_hh = args
    xproj = torch.baddbmm(b_ih.unsqueeze(1), x.reshape(2, 12, 2), w_ih.transpose(1, 2)).view(2, 4, 3, -1)
    h_all, saved = torch.ops.mdesc.ensemble_rnn_forward(xproj, w_hh, b_hh, "gru")
    dx, dh = torch.ops.mdesc.ensemble_rnn_backward(dy, h_all, saved, w_hh, "gru")
    H = 5
    r = saved[..., :H]
    torch.testing.assert_close(dh[..., :2 * H], dx[..., :2 * H], rtol=0, atol=0)
    torch.testing.assert_close(dh[..., 2 * H:], dx[..., 2 * H:] * r, rtol=1e-15, atol=1e-15)
    assert (dh[..., 2 * H:] != dx[..., 2 * H:]).any()


def test_only_some_gradients_and_noncontiguous_inputs():
    """Inputs that are views with odd strides, and weights without requires_grad, give the
    reference's results."""
    cell, E, T, B, I, H = "lstm", 2, 5, 3, 4, 6
    args, dy = _inputs(cell, E, T, B, I, H, torch.float64, "cpu", seed=11, scale=2.0)
    x = args[0].transpose(1, 2).contiguous().transpose(1, 2)  # same values, non-contiguous
    w_hh = args[2].transpose(1, 2).contiguous().transpose(1, 2)
    assert not x.is_contiguous() and not w_hh.is_contiguous()
    outs = {}
    for backend in ("torch", "extension"):
        xl = x.detach().clone().requires_grad_()
        h = ensemble_recurrent(xl, args[1], w_hh, args[3], args[4], cell, backend=backend)
        (dx,) = torch.autograd.grad(h, [xl], dy.transpose(1, 2).contiguous().transpose(1, 2))
        outs[backend] = (h.detach(), dx)
    for a, b in zip(outs["extension"], outs["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_available_and_auto():
    x = torch.zeros(1, 2, 1, 4)
    assert _op.available(x) and _op.available(x.double())
    assert not _op.available(x.half()) and not _op.available(x.long())
    args, _ = _inputs("gru", 1, 2, 1, 2, 3, torch.float32, "cpu", seed=0)
    args = [a.requires_grad_() for a in args]
    h = ensemble_recurrent(*args, "gru", backend="auto")
    assert "_Recurrence" in type(h.grad_fn).__name__  # auto took the extension on the CPU
    torch.testing.assert_close(h, ensemble_recurrent(*args, "gru", backend="extension"), rtol=0, atol=0)


def _op_args(cell="lstm", E=2, T=3, B=2, H=4, dtype=torch.float32):
    G = CELL_GATES[cell]
    return (torch.zeros(E, T, B, G * H, dtype=dtype), torch.zeros(E, G * H, H, dtype=dtype),
            torch.zeros(E, G * H, dtype=dtype))


@pytest.mark.parametrize("change, message", [
    (lambda a: (a[0], a[1], a[2], "lstmx"), "cell must be one of lstm, gru, rnn_tanh, rnn_relu, got 'lstmx'"),
    (lambda a: (a[0][..., :-1], a[1], a[2], "lstm"), "xproj must be (E, T, B, G*H)"),
    (lambda a: (a[0], a[1][:, :-4], a[2], "lstm"), "w_hh must be (E, G*H, H)"),
    (lambda a: (a[0], a[1], a[2][:1], "lstm"), "b_hh must be (E, G*H)"),
    (lambda a: (a[0], a[1].double(), a[2], "lstm"), "w_hh must have the dtype of the others"),
    (lambda a: (a[0].long(), a[1].long(), a[2].long(), "lstm"), "must be float32 or float64"),
    (lambda a: (a[0][:, :0], a[1], a[2], "lstm"), "empty input"),
    (lambda a: (a[0][0], a[1], a[2], "lstm"), "xproj must have 4 dimensions"),
    (lambda a: (a[0], a[1], a[2], "gru"), "w_hh must be (E, G*H, H)"),
])
def test_forward_bad_input(change, message):
    with pytest.raises(RuntimeError) as info:
        torch.ops.mdesc.ensemble_rnn_forward(*change(_op_args()))
    assert "ensemble_rnn_forward" in str(info.value) and message in str(info.value)


def test_backward_bad_input():
    xproj, w_hh, b_hh = _op_args("gru", H=4)
    h_all, saved = torch.ops.mdesc.ensemble_rnn_forward(xproj, w_hh, b_hh, "gru")
    bad = [((h_all[..., :-1], h_all, saved, w_hh, "gru"), "dh_all must be (E, T, B, H)"),
           ((h_all, h_all, saved[..., :-1], w_hh, "gru"), "saved must be (E, T, B, S*H)"),
           ((h_all, h_all, saved, w_hh, "lstm"), "w_hh must be (E, G*H, H)"),
           ((h_all.double(), h_all, saved, w_hh, "gru"), "dh_all must have the dtype of the others")]
    for args, message in bad:
        with pytest.raises(RuntimeError, match="ensemble_rnn_backward") as info:
            torch.ops.mdesc.ensemble_rnn_backward(*args)
        assert message in str(info.value), str(info.value)

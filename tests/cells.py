"""The registry of recurrent cells that tests/test_cells.py checks, one entry per cell.

A new cell joins the shared suite by adding one ``Cell`` to ``CELLS``: its module (with
``forward(params, x, *states, **kwargs) -> hs, cache`` and
``backward(dhs, cache) -> dx, *dstates, dparams``), its parameters' named dimensions, its
torch autograd reference from ``rnnbook.reference``, and, if PyTorch has the cell, how to
build the torch module that ``from_torch`` must reproduce.
"""
import dataclasses
import importlib
from typing import Callable

import torch

from rnnbook import reference


@dataclasses.dataclass(frozen=True)
class Cell:
    name: str                       # the id in test names
    module: str                     # import path of the cell's module
    params: dict                    # {key: named dimensions}, e.g. {"U": "D D"}
    reference: Callable             # rnnbook.reference function: (p, x, *states, **kwargs)
    states: tuple = ("h0",)         # names of the initial states, each (N, D)
    kwargs: dict = dataclasses.field(default_factory=dict)   # e.g. {"reset": "after"}
    torch_module: Callable = None   # (M, D, bias) -> torch module that from_torch reads
    torch_run: Callable = None      # (module, x, states) -> hs, torch tensors
    torch_rejects: tuple = ()       # ((factory, message regex), ...) from_torch refuses
    scale: float = 0.5              # parameters ~ N(0, scale^2)

    @property
    def lib(self):
        return importlib.import_module(self.module)


def _run_h(module, x, states):
    return module(x, states[0][None])[0]


_GRU_PARAMS = {f"{kind}_{g}": dims for g in "zrh"
               for kind, dims in (("W", "D M"), ("U", "D D"), ("b", "D"))}

CELLS = [
    Cell("rnn", "rnnbook.rnn", {"U": "D D", "W": "D M", "b": "D"}, reference.rnn,
         torch_module=lambda M, D, bias: torch.nn.RNN(M, D, bias=bias),
         torch_run=_run_h,
         torch_rejects=(
             (lambda: torch.nn.LSTM(3, 4), r"must be a torch.nn.RNN .*got LSTM"),
             (lambda: torch.nn.GRU(3, 4), r"got GRU"),
             (lambda: torch.nn.RNN(3, 4, num_layers=2), r"num_layers=1, got 2"),
             (lambda: torch.nn.RNN(3, 4, bidirectional=True), r"unidirectional"),
             (lambda: torch.nn.RNN(3, 4, nonlinearity="relu"),
              r"nonlinearity='tanh', got 'relu'"),
             (lambda: torch.nn.Linear(3, 4), r"got Linear"),
             (lambda: {"U": 1}, r"got dict"),
         )),
    Cell("lstm", "rnnbook.lstm",
         {f"{kind}_{g}": dims for g in "ifoc"
          for kind, dims in (("W", "D M"), ("U", "D D"), ("b", "D"))},
         reference.lstm, states=("h0", "c0"),
         torch_module=lambda M, D, bias: torch.nn.LSTM(M, D, bias=bias),
         torch_run=lambda module, x, s: module(x, (s[0][None], s[1][None]))[0],
         torch_rejects=(
             (lambda: torch.nn.RNN(3, 4), r"must be a torch.nn.LSTM .*got RNN"),
             (lambda: torch.nn.GRU(3, 4), r"got GRU"),
             (lambda: torch.nn.LSTMCell(3, 4), r"got LSTMCell"),
             (lambda: torch.nn.LSTM(3, 4, num_layers=2), r"num_layers=1, got 2"),
             (lambda: torch.nn.LSTM(3, 4, bidirectional=True), r"unidirectional"),
             (lambda: torch.nn.LSTM(3, 4, proj_size=2), r"proj_size=0 .*got 2"),
             (lambda: torch.nn.Linear(3, 4), r"got Linear"),
             (lambda: {"W_i": 1}, r"got dict"),
         )),
    Cell("residual", "rnnbook.residual", {"U": "D D", "W": "D M", "b": "D"},
         reference.residual),
    # scale 1: the reset gate's gradients (small: r only scales part of h~'s input)
    # stay well above the rounding noise of the central differences
    Cell("gru-before", "rnnbook.gru", _GRU_PARAMS, reference.gru,
         kwargs={"reset": "before"}, scale=1.0),
    Cell("gru-after", "rnnbook.gru", {**_GRU_PARAMS, "b_hn": "D"}, reference.gru,
         kwargs={"reset": "after"}, scale=1.0,
         torch_module=lambda M, D, bias: torch.nn.GRU(M, D, bias=bias),
         torch_run=_run_h,
         torch_rejects=(
             (lambda: torch.nn.LSTM(3, 4), r"must be a torch.nn.GRU .*got LSTM"),
             (lambda: torch.nn.RNN(3, 4), r"got RNN"),
             (lambda: torch.nn.GRUCell(3, 4), r"got GRUCell"),
             (lambda: torch.nn.GRU(3, 4, num_layers=2), r"num_layers=1, got 2"),
             (lambda: torch.nn.GRU(3, 4, bidirectional=True), r"unidirectional"),
             (lambda: torch.nn.Linear(3, 4), r"got Linear"),
             (lambda: {"W_z": 1}, r"got dict"),
         )),
]

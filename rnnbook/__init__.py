"""rnnbook: the library that the chapters of the book derive.

Modules (each small, each mirroring one chapter's equations):

- ``rnnbook.rnn``        simple (Elman) RNN, forward and BPTT backward (chapters 01, 02)
- ``rnnbook.gradcheck``  central finite differences and relative errors
- ``rnnbook.assign``     writes ``exercises/`` from ``solutions/``
- ``rnnbook.bench``      speed comparison with PyTorch

Nothing is imported here, so ``python -m rnnbook.bench`` can set thread
counts before NumPy loads.
"""

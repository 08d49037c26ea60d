"""rnnbook: the library that the chapters of the book derive.

Modules:

- ``rnnbook.rnn``        simple (Elman) RNN, forward and BPTT backward (chapters 01, 02)
- ``rnnbook.gradcheck``  central finite differences and relative errors
- ``rnnbook.diagrams``   boxes and arrows for chapter 01's network drawings
- ``rnnbook.assign``     writes ``exercises/`` from ``solutions/``
- ``rnnbook.grade``      grades students' notebooks (``rnnbook grade``); ``rnnbook.sandbox``
  runs each one in its own process; ``rnnbook.autograder`` builds the Gradescope bundle
- ``rnnbook.bench``      speed: NumPy against PyTorch, notebooks, the grader

Nothing is imported here, so ``python -m rnnbook.bench`` can set thread
counts before NumPy loads.
"""

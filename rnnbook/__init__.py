"""rnnbook: the library that the chapters of the book derive.

The cells (one module each, same contract: forward/backward/from_torch, see DESIGN.md):

- ``rnnbook.rnn``        simple (Elman) RNN, forward and BPTT backward (chapters 01, 02)
- ``rnnbook.residual``   the residual update (6.50), h_t = h_{t-1} + tanh(...) (chapter 03)
- ``rnnbook.lstm``       LSTM (chapter 04)
- ``rnnbook.gru``        GRU, reset gate before or after the product (chapter 05)

Around them:

- ``rnnbook.reference``  the torch autograd references of every cell (tests, checks, book)
- ``rnnbook.rnn_torch``  chapter 02's backward sweep in torch tensor ops, as an autograd.Function
- ``rnnbook.stacked``    L-layer tanh RNN from rnnbook.rnn, from_torch for nn.RNN(num_layers=L)
- ``rnnbook.clip``       gradient clipping by norm and by value (chapter 03)
- ``rnnbook.tasks``      long-dependency tasks: adding, copy, digit sum (chapters 03-06)
- ``rnnbook.train``      loss heads, SGD and Adam, a training loop for any cell (chapters 03-06)
- ``rnnbook.experiments`` resumable experiment runner (chapter 03's clipping experiment)
- ``rnnbook.compare``    chapter 06's GRU-or-LSTM grid and the parameter and FLOP counts
- ``rnnbook.gradcheck``  central finite differences, relative errors, self-checks that diagnose
- ``rnnbook.notebook``   show_source (quote the library into a page) and the notebooks' setup
- ``rnnbook.diagrams``   boxes and arrows for the chapters' network drawings
- ``rnnbook.assign``     writes ``exercises/`` from ``solutions/``
- ``rnnbook.grading``    grades students' notebooks (``rnnbook grade``) in a sandbox, and
  builds the Gradescope bundle (``rnnbook autograder``); checks files import ``Check`` from it
- ``rnnbook.bench``      speed: each cell against torch, notebooks, the grader

Nothing is imported here, so ``python -m rnnbook.bench`` can set thread
counts before NumPy loads.
"""

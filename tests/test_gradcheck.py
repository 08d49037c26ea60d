import numpy as np
import pytest

from rnnbook.gradcheck import check, numerical_gradient, rel_error


def test_numerical_gradient_of_known_function():
    x = np.array([[0.5, -1.0], [2.0, 0.1]])
    expected = 3 * x ** 2 + np.cos(x)
    grad = numerical_gradient(lambda: np.sum(x ** 3 + np.sin(x)), x)
    assert rel_error(grad, expected) < 1e-9
    assert np.array_equal(x, [[0.5, -1.0], [2.0, 0.1]])   # restored


def test_numerical_gradient_rejects_non_float64():
    with pytest.raises(ValueError, match="float64"):
        numerical_gradient(lambda: 0.0, np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match="float64"):
        numerical_gradient(lambda: 0.0, [1.0, 2.0])


def test_rel_error():
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert rel_error([1.0, 2.0], [1.0, 2.2]) == pytest.approx(0.2 / 2.2)
    assert np.isnan(rel_error([np.nan], [1.0]))
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.zeros(3), np.zeros(4))


def test_check_pass_and_fail(capsys):
    assert check("dU", [1.0, 2.0], [1.0, 2.0 + 1e-12]) < 1e-7
    assert capsys.readouterr().out.startswith("PASS dU: relative error")
    with pytest.raises(AssertionError, match="FAIL dW"):
        check("dW", [1.0, 2.0], [1.0, 2.5])
    assert capsys.readouterr().out.startswith("FAIL dW")
    with pytest.raises(AssertionError, match="FAIL nan"):
        check("nan", [np.nan], [1.0])
    with pytest.raises(AssertionError, match="got None"):
        check("none", None, [1.0])
    with pytest.raises(AssertionError, match="shapes differ"):
        check("shape", np.zeros((2, 3)), np.zeros((3, 2)))

import numpy as np
import pytest

from rnnbook.gradcheck import all_checks, check, diagnose, numerical_gradient, rel_error


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
    with pytest.raises(AssertionError, match=r"shape \(2, 3\), expected \(3, 2\)"):
        check("shape", np.zeros((2, 3)), np.zeros((3, 2)))
    assert "transposed" in capsys.readouterr().out.splitlines()[-1]


def test_long_lines_are_split_between_words(capsys):
    check("a check with a long name that would not fit on one printed line", [1.0], [1.0])
    first, second = capsys.readouterr().out.splitlines()
    assert first.endswith("line:") and second.strip().startswith("relative error 0e+00")


@pytest.mark.parametrize("actual,expected,hint", [
    (np.arange(9.0).reshape(3, 3).T, np.arange(9.0).reshape(3, 3), "transposed"),
    (-np.arange(1.0, 5.0), np.arange(1.0, 5.0), "opposite sign"),
    (np.arange(1.0, 5.0) / 3, np.arange(1.0, 5.0), "1/3 of the expected result"),
    (np.arange(1.0, 5.0) * 4, np.arange(1.0, 5.0), "4 times the expected result"),
    (np.arange(1.0, 5.0) * (1 + 3e-6), np.arange(1.0, 5.0), "a tiny constant factor"),
    (np.zeros(4), np.arange(1.0, 5.0), "all zeros"),
    (np.array([1.0, np.nan]), np.ones(2), "NaN or infinity, first at index (1,)"),
    (np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 7.0]), "first wrong entry at index (2,)"),
    (np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 7.0]), "not rounding"),
    (np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-5]), "small but above"),
])
def test_diagnose_names_the_usual_mistakes(actual, expected, hint):
    assert any(hint in h for h in diagnose(actual, expected, 1e-7)), diagnose(actual, expected, 1e-7)


def test_diagnose_names_time_steps():
    expected = np.ones((5, 2, 3))
    actual = expected.copy()
    actual[:3, 1, 2] = 2.0
    hints = diagnose(actual, expected, 1e-7, axes=("t", "n", "d"))
    assert "index (0, 1, 2) (t=0, n=1, d=2)" in hints[0]
    assert "wrong at t = 0..2 of 0..4" in hints[1]


def test_all_checks_runs_every_check_then_fails(capsys):
    with pytest.raises(AssertionError, match="2 check\\(s\\) failed: a; c"):
        with all_checks() as c:
            c.check("a", [1.0], [2.0])
            c.check("b", [1.0], [1.0])
            c.check("c", [1.0], [3.0])
    out = capsys.readouterr().out
    assert out.count("FAIL") == 2 and out.count("PASS") == 1
    with all_checks() as c:
        assert c.check("ok", [1.0], [1.0]) == 0.0


def test_all_checks_prints_once_in_order_also_on_an_exception(capsys, monkeypatch):
    writes = []
    monkeypatch.setattr("sys.stdout.write", lambda text: writes.append(text))
    with pytest.raises(KeyError):
        with all_checks() as c:
            c.check("first", [1.0], [1.0])
            c.note("a note between the checks")
            c.check("second", [1.0], [1.0])
            raise KeyError("the cell failed after its checks")
    assert len(writes) == 1, writes
    lines = writes[0].splitlines()
    assert lines[0].startswith("PASS first") and lines[1] == "a note between the checks"
    assert lines[2].startswith("PASS second")


def test_hints_stay_within_the_line_width(capsys):
    expected = np.ones((5, 2, 3))
    actual = expected.copy()
    actual[1:4] = 7.0
    with pytest.raises(AssertionError):
        check("a check whose diagnosis is long", actual, expected,
              axes=("t", "n", "d"))
    out = capsys.readouterr().out
    assert "first wrong entry" in out and "not rounding" in out
    assert all(len(line) <= 78 for line in out.splitlines()), out

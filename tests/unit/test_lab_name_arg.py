"""A bad lab name is a usage error with one line, never a traceback (seen with `down --name x.lock`)."""

from __future__ import annotations

import pytest

from felixpy.lab.main import main


@pytest.mark.parametrize("argv", [["down", "--name", "fpc1.lock"], ["--name", "Bad", "down"]])
def test_bad_lab_name_is_one_usage_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "invalid lab name" in err and "Traceback" not in err

"""exit_on_user_error: one line and exit 2; the traceback only in debug mode."""

import pytest

from hrkd_ds.errors import UserError, exit_on_user_error


@pytest.mark.parametrize("debug", [False, True])
def test_one_line_unless_debug(capsys, debug):
    with pytest.raises(SystemExit) as info, exit_on_user_error("prog", debug=debug):
        raise UserError("data.path: broken")
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.splitlines()[-1] == "prog: error: data.path: broken"
    assert ("Traceback" in err) == debug and (len(err.splitlines()) == 1) != debug

"""Progress bars on a terminal only; in a file or a CI log, one line per epoch (issue 20 item 2)."""

import io
import logging

from tqdm.auto import tqdm

from ecg_transfer import progress as progress_module
from ecg_transfer.progress import ProgressLines, on_terminal, progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_file_or_a_pipe_is_no_terminal():
    assert not on_terminal(io.StringIO())
    assert on_terminal(_Terminal())


def test_off_a_terminal_each_epoch_is_one_log_line_with_what_the_loop_set(monkeypatch, caplog, capsys):
    monkeypatch.setattr(progress_module, "on_terminal", lambda stream=None: False)
    with caplog.at_level(logging.INFO, logger="ecg_transfer.progress"):
        with progress(range(3, 6), total=5, initial=2, desc="random-f1-t0", unit="epoch") as epochs:
            for epoch in epochs:
                epochs.set_postfix(loss=f"{1 / epoch:.3g}")
    assert caplog.messages == ["random-f1-t0: epoch 3/5 loss=0.333", "random-f1-t0: epoch 4/5 loss=0.25",
                               "random-f1-t0: epoch 5/5 loss=0.2"]
    assert "\r" not in capsys.readouterr().err


def test_off_a_terminal_other_units_log_each_tenth(monkeypatch, caplog):
    monkeypatch.setattr(progress_module, "on_terminal", lambda stream=None: False)
    with caplog.at_level(logging.INFO, logger="ecg_transfer.progress"):
        assert list(progress(range(1000), desc="labelled windows", unit="rec")) == list(range(1000))
    assert len(caplog.messages) == 10 and caplog.messages[-1] == "labelled windows: rec 1000/1000"


def test_on_a_terminal_a_tqdm_bar_and_disabled_is_silent(monkeypatch, caplog):
    monkeypatch.setattr(progress_module, "on_terminal", lambda stream=None: True)
    assert isinstance(progress(range(2), desc="x"), tqdm)
    monkeypatch.setattr(progress_module, "on_terminal", lambda stream=None: False)
    with caplog.at_level(logging.INFO, logger="ecg_transfer.progress"):
        assert list(progress(range(2), desc="x", disable=True)) == [0, 1]
    assert caplog.messages == []
    assert isinstance(progress(range(2)), ProgressLines)

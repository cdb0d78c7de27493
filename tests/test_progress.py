"""Progress in a log file: a few newline-terminated lines, never one ``\\r``-joined line (issue 19)."""

from __future__ import annotations

import io
import subprocess
import sys

from gpudecode.progress import tqdm


def test_a_bar_in_a_log_file_is_a_few_plain_lines():
    log = io.StringIO()  # not a TTY
    bar = tqdm(total=1000, desc="synth", unit="video", file=log, mininterval=0)
    for _ in range(1000):
        bar.update()
        bar.set_postfix(loss="1.000")  # every step, as the training loop does: no line of its own
    bar.close()
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n")
    assert 2 <= len(lines) <= 12, lines  # the start, about every tenth of the way, the end
    assert lines[0].startswith("synth:   0%") and "1000/1000" in lines[-1] and "loss=1.000" in lines[-1]
    assert all(len(line) <= 100 for line in lines)


def test_a_cleared_bar_leaves_no_blank_lines():
    log = io.StringIO()
    for _ in tqdm(range(3), desc="test", leave=False, file=log):
        pass
    assert log.getvalue().splitlines() and all(line.strip() for line in log.getvalue().splitlines())


def test_synth_dataset_bar_in_a_log_file(tmp_path):
    # the synthetic dataset's bar used to be one line of a few thousand characters in a log file
    done = subprocess.run([sys.executable, "-m", "gpudecode.cli", "synth", str(tmp_path / "s"), "--videos-per-class",
                           "3", "--frames", "13", "--size", "32x32"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "\r" not in done.stderr and 2 <= len(lines) <= 12, done.stderr
    assert all(line.startswith("synth") for line in lines) and "24/24" in lines[-1]

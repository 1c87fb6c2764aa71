"""A preemption signal sets the flag once; repeats can no longer kill the process."""

import os
import signal
import subprocess
import sys

from tests.conftest import REPO_ROOT

SCRIPT = """
import os, signal, sys, time
from hrkd_ds.engine.preemption import EXIT_PREEMPTED, PreemptionFlag
flag = PreemptionFlag().install()
print("ready", flush=True)
while not flag.requested:
    time.sleep(0.01)
for _ in range(3):  # the job script's re-sends, also during shutdown
    os.kill(os.getpid(), signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.1)
if signal.getsignal(signal.SIGUSR1) != signal.SIG_IGN:  # Python would restore SIG_DFL at shutdown
    sys.exit(9)
sys.exit(EXIT_PREEMPTED)
"""


def test_repeated_signals_after_the_request_do_not_kill():
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=60) == 3

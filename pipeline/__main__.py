import sys

try:
    from pipeline.cli import main

    code = main()
except KeyboardInterrupt:  # Ctrl-C before the CLI could take it (while importing): nothing was written yet
    print("interrupted", file=sys.stderr)
    code = 130
if code == 130:
    # A KeyboardInterrupt that passed through one of CPython's PyRun_* calls (inside some library's import) sets a
    # flag that makes the interpreter end itself with SIGINT at exit (a return code of -2, about 1 Ctrl-C in 20
    # early in a run) although the CLI caught it. Every successful PyRun_* call clears that flag, so the
    # documented exit code 130 is what the caller sees.
    import ctypes

    ctypes.pythonapi.PyRun_SimpleString(b"pass")
# The command is over and its code decided: a Ctrl-C during the interpreter's teardown (atexit handlers, library
# threads; seconds on a loaded machine) must not turn it into -2 (killed by SIGINT), which a fault test saw once
# in 20 instants after a run's end line. Ignored, not handled: CPython resets a Python handler to the default
# before its very last steps, ignored stays ignored.
import signal  # noqa: E402

signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.exit(code)

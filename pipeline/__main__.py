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
sys.exit(code)

import sys

try:
    from pipeline.cli import main

    code = main()
except KeyboardInterrupt:  # Ctrl-C before the CLI could take it (while importing): nothing was written yet
    print("interrupted", file=sys.stderr)
    code = 130
sys.exit(code)

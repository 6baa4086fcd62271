from gtgm import runtime
from gtgm.cli import main

code = main()
runtime.hard_exit(code)  # under torchrun: no Python teardown, which can hang after a distributed run
raise SystemExit(code)

"""Run gtgm command lines in one process and record each one's exit code and standard error.

python -m tests.reliability.run_argvs ARGVS.json RESULTS.json

ARGVS.json: {name: [arg, ...]}; RESULTS.json: {name: {"code": int, "err": str}}. The read-only-output test runs it
inside a user and mount namespace where the output folder is a read-only bind mount (a real EROFS on every write).
"""

import contextlib
import io
import json
import sys

from gtgm.cli import main


def run(argvs: dict[str, list[str]]) -> dict[str, dict]:
    results = {}
    for name, argv in argvs.items():
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(argv)
        results[name] = {"code": code, "err": err.getvalue()}
    return results


if __name__ == "__main__":
    src, dest = sys.argv[1:3]
    with open(src) as f:
        argvs = json.load(f)
    with open(dest, "w") as f:
        json.dump(run(argvs), f)

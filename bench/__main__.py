"""`python -m bench run [SCENARIO ...]` runs scenarios (all when none is named) and regenerates
bench/README.md; `python -m bench report` only regenerates the README from bench/results/;
`python -m bench profile` profiles the shim and the gateway under load (pyinstrument)."""

from __future__ import annotations

import argparse
import time
import traceback

from bench import report
from bench.common import write_result
from bench.scenarios import NAMES, Options, load


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run scenarios and write bench/results/")
    run.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(NAMES))
    run.add_argument("--seconds", type=float, default=6.0, help="length of each load run")
    run.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    commands.add_parser("report", help="regenerate bench/README.md from bench/results/")
    prof = commands.add_parser("profile", help="pyinstrument the shim and gateway under load")
    prof.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    if args.command == "run":
        names = args.scenarios or list(NAMES)
        chosen = [(name, load(name)) for name in names]
        options = Options(seconds=args.seconds, quick=args.quick)
        failed = []
        for name, scenario in chosen:
            print(f"== {name}", flush=True)
            started = time.monotonic()
            try:
                result = scenario(options)
            except Exception as error:  # one broken scenario must not hide the others
                traceback.print_exc()
                failed.append(name)
                summary = str(error).strip().splitlines()
                write_result(name, {"error": summary[-1] if summary else repr(error)})
                continue
            result["wallSeconds"] = round(time.monotonic() - started, 1)
            print(f"wrote {write_result(name, result)}", flush=True)
        report.write_readme()
        if failed:
            raise SystemExit(f"scenarios that failed: {', '.join(failed)}")
    elif args.command == "profile":
        from bench import profile

        profile.main(args.seconds)
    else:
        report.write_readme()


if __name__ == "__main__":
    main()

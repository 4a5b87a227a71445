"""Command line: ``python -m nnfast`` (the tutorial programs) or ``python -m nnfast bench``."""

import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "bench":
        from .cli.bench import main as bench_main
        return bench_main(argv[1:])
    if argv and argv[0] in ("-h", "--help"):
        print("usage: python -m nnfast            train the tutorial's networks with both backends\n"
              "       python -m nnfast bench ...  benchmark (python -m nnfast bench --help)")
        return 0
    if argv:
        print(f"unknown command {argv[0]!r}; try python -m nnfast --help", file=sys.stderr)
        return 2
    from .cli.demo import main as demo_main
    return demo_main()


if __name__ == "__main__":
    sys.exit(main())

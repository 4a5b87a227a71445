"""Runs ``python -m nnfast`` and the test suite against the installed nnfast, not a source tree.

Usage: python .ci/test_installed.py SOURCE_DIR [PYTEST_ARG ...]

SOURCE_DIR is an unpacked sdist or a checkout. Everything in it except the ``nnfast`` package
is copied to a new temporary directory, which becomes the working directory: the tests then
find the files they read beside them (README.md, .ci/run, examples/ ...) as in a checkout,
while ``import nnfast`` can only reach the installed package. The run sets
NNFAST_EXPECT_INSTALLED=1, which tests/test_build.py turns into a check that the package
imported is the one pip installed from a wheel. Used by .ci/wheels and by cibuildwheel's test
command (pyproject.toml), so it is plain Python for every platform.
"""

import os
import shutil
import subprocess
import sys
import tempfile

# Not copied: the package itself (top level) and what builds and tools leave in a checkout.
LEFT_OUT = {".git", "build", "dist", "wheelhouse", ".venv", ".ci-venv", ".ci-work",
            "__pycache__", ".pytest_cache", ".hypothesis", ".benchmarks"}


# Version, location, and the kernel build chosen at import, one per line.
DESCRIBE = """\
import nnfast, nnfast._kernels as d
print(nnfast.__version__)
print(nnfast.__file__)
print(d.kernels.__name__, d.kernels.ISA, "with OpenMP" if d.kernels.OPENMP else "without OpenMP")
"""


def _inside(path, directory):
    try:
        return os.path.commonpath([path, directory]) == directory
    except ValueError:  # different drives (Windows)
        return False


def _ignorer(source):
    def ignore(directory, names):
        top = os.path.samefile(directory, source)
        return [name for name in names
                if name in LEFT_OUT or name.endswith(".egg-info") or (top and name == "nnfast")]
    return ignore


def main(argv):
    if not argv:
        sys.exit(__doc__)
    source, pytest_args = os.path.abspath(argv[0]), argv[1:]
    with tempfile.TemporaryDirectory(prefix="nnfast-installed-") as work:
        tree = os.path.join(work, "tree")
        shutil.copytree(source, tree, ignore=_ignorer(source))
        env = dict(os.environ, NNFAST_EXPECT_INSTALLED="1")
        env.pop("PYTHONPATH", None)
        found = subprocess.run([sys.executable, "-c", DESCRIBE], cwd=tree, env=env, check=True,
                               capture_output=True, text=True).stdout.splitlines()
        print(f"testing the installed nnfast {found[0]} at {found[1]}: {found[2]}", flush=True)
        if _inside(os.path.realpath(found[1]), os.path.realpath(source)):
            sys.exit(f"nnfast was imported from the source tree {source}")
        subprocess.run([sys.executable, "-m", "nnfast"], cwd=tree, env=env, check=True)
        return subprocess.run([sys.executable, "-m", "pytest", *pytest_args], cwd=tree,
                              env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Prints ``name==minimum`` for every requirement of a built wheel and of the extras named.

Usage: python .ci/min_requirements.py WHEEL [EXTRA ...] > minimums.txt

The minimums are read from the wheel's own metadata (generated from pyproject.toml), which
is exactly what pip resolves when a user installs it, so every line another change adds to
``dependencies`` or to an extra is covered without editing this script. A requirement
without a lower bound is an error: its oldest version is then claimed without being tested.
"""

import sys
import zipfile
from email.parser import HeaderParser

from packaging.requirements import Requirement


def wheel_requirements(path):
    """The Requires-Dist lines of the wheel at ``path``."""
    with zipfile.ZipFile(path) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = HeaderParser().parsestr(wheel.read(name).decode("utf-8"))
    return metadata.get_all("Requires-Dist") or []


def minimum(requirement):
    """The lower bound declared for ``requirement`` (>=, ~= or ==), or None."""
    bounds = [spec.version for spec in requirement.specifier
              if spec.operator in (">=", "~=", "==")]
    return bounds[0] if len(bounds) == 1 else None


def main(argv):
    if not argv:
        sys.exit(__doc__)
    wheel, extras = argv[0], [""] + argv[1:]
    pins, missing = {}, []
    for line in wheel_requirements(wheel):
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is not None and not any(marker.evaluate({"extra": e}) for e in extras):
            continue
        version = minimum(requirement)
        if version is None:
            missing.append(line)
            continue
        extra = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        pin = f"{requirement.name}{extra}=={version}"
        other = pins.setdefault(requirement.name.lower(), pin)
        if other != pin:
            sys.exit(f"{requirement.name} has two different minimums: {other} and {pin}")
    if missing:
        sys.exit("declare a single minimum version (name>=X.Y) for: " + ", ".join(missing))
    print("\n".join(sorted(pins.values(), key=str.lower)))


if __name__ == "__main__":
    main(sys.argv[1:])

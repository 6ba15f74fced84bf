"""The dependency floors of pyproject.toml as exact pins, for `make floors`.

    python .ci/floors.py [--skip NAME ...]   print "name==floor" for each core dependency
    python .ci/floors.py --check             fail unless the installed versions are the floors

Every core dependency must state a floor as ``name>=version``: the floor is what `make floors`
installs and tests, so an unstated one would go untested.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
FLOOR = re.compile(r"^([A-Za-z0-9_.-]+)>=([0-9][^,;\s]*)$")


def floors() -> dict[str, str]:
    """Each core dependency's name and the version its ``>=`` bound names."""
    found = {}
    for requirement in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]:
        match = FLOOR.match(requirement.replace(" ", ""))
        if match is None:
            sys.exit(f"{PYPROJECT}: dependency {requirement!r} must be 'name>=version' (its floor).")
        found[match.group(1)] = match.group(2)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", nargs="*", default=[], help="dependencies to leave out of the pins")
    parser.add_argument("--check", action="store_true", help="compare the installed versions")
    args = parser.parse_args()
    pins = {name: version for name, version in floors().items() if name not in args.skip}
    if not args.check:
        print("\n".join(f"{name}=={version}" for name, version in pins.items()))
        return
    wrong = {name: metadata.version(name) for name in pins if metadata.version(name) != pins[name]}
    if wrong:
        sys.exit(f"installed versions differ from the floors {pins}: {wrong}")
    print("installed at their floors:", ", ".join(f"{n} {v}" for n, v in pins.items()))


if __name__ == "__main__":
    main()

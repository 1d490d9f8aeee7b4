"""Write the third-party requirements of pyproject.toml, one a line, to standard output.

Run in the directory that holds pyproject.toml (the Dockerfiles' dependency layer does):

    python requirements_from_pyproject.py [GROUP[,GROUP...]]... > requirements.txt

Output: the base dependencies, then those of each named optional-dependencies group, in
pyproject order; a group that does not exist is an error. When the TENSORFLOW_EXTRAS
environment variable is set (e.g. "and-cuda"), its comma-separated extras are added to the
tensorflow requirement. The project itself is not listed: it is installed later, --no-deps.
"""

import os
import re
import sys
import tomllib

# A PEP 508 requirement: name, optional [extras], then version specifiers and markers.
REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?(.*)", re.S)


def split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def requirements(project: dict, groups: list[str], tensorflow_extras: list[str]) -> list[str]:
    optional = project.get("optional-dependencies", {})
    result = list(project.get("dependencies", []))
    for group in groups:
        if group not in optional:
            raise SystemExit(f"pyproject.toml has no optional-dependencies group {group!r}")
        result += optional[group]
    if not tensorflow_extras:
        return result
    found = False
    for index, requirement in enumerate(result):
        match = REQUIREMENT.fullmatch(requirement)
        if match and match.group(1).lower() == "tensorflow":
            name, extras, rest = match.groups()
            merged = sorted({*split(extras or ""), *tensorflow_extras})
            result[index] = f"{name}[{','.join(merged)}]{rest}"
            found = True
    if not found:
        raise SystemExit("TENSORFLOW_EXTRAS is set but tensorflow is not a dependency")
    return result


def main() -> None:
    with open("pyproject.toml", "rb") as fh:
        project = tomllib.load(fh)["project"]
    groups = [group for arg in sys.argv[1:] for group in split(arg)]
    tensorflow_extras = split(os.environ.get("TENSORFLOW_EXTRAS", ""))
    lines = requirements(project, groups, tensorflow_extras)
    sys.stdout.write("".join(f"{line}\n" for line in lines))


if __name__ == "__main__":
    main()

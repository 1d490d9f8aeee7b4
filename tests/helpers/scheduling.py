"""How `make test` spreads the suite over pytest-xdist's workers (-n 3 --dist loadgroup): the
tests that share a package's or a module's fixtures go to one worker together (xdist_group),
and the longest tests go out first."""

from __future__ import annotations

import pytest


def shared_setup(item: pytest.Item) -> str | None:
    """The package or module whose fixtures ``item`` shares with its neighbours (one of
    package, module or class scope: an app, a service, published versions), or None."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    scopes = {defs[-1].scope: defs[-1] for defs in info.name2fixturedefs.values() if defs}
    if "package" in scopes:
        return scopes["package"].baseid or None
    return item.nodeid.split("::")[0] if {"module", "class"} & scopes.keys() else None


def group_with_shared_setup(item: pytest.Item) -> None:
    """Mark ``item`` xdist_group by its shared fixtures, unless it has a group: handed out
    one by one, such tests would each set them up on every worker."""
    group = shared_setup(item)
    if group is not None and item.get_closest_marker("xdist_group") is None:
        item.add_marker(pytest.mark.xdist_group(group))


def _set_id(item: pytest.Item, nodeid: str) -> None:
    node_id = getattr(item, "_id", None)
    if node_id is not None and hasattr(node_id, "parse"):  # pytest 9.2's structured id
        item._id = type(node_id).parse(nodeid)
    else:
        item._nodeid = nodeid


def name_by_test(items: list[pytest.Item]) -> None:
    """Give each test its own id, ``<parent>::<name>``, where pytest 9.2 gave several one:
    schemathesis' tests of each operation get their function's (``name`` holds the
    operation), and pytest-xdist, which keeps a worker's tests by id, would run only the
    first of them."""
    for item in items:
        if item.parent is not None and item.nodeid.rpartition("::")[2] != item.name:
            _set_id(item, f"{item.parent.nodeid}::{item.name}")


def tag_groups(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a worker of --dist loadgroup, end each grouped test's id with ``@<group>``, as
    pytest-xdist does to tell its scheduler the group. Its 3.8 writes that where pytest 9.2 no
    longer reads a test's id (pytest-dev/pytest-xdist#1386): without this, every grouped test
    would go out alone. A no-op where xdist's own tag took."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        names = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                        for mark in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(names)
        if names and not item.nodeid.endswith(suffix):
            _set_id(item, item.nodeid + suffix)


def longest_first(items: list[pytest.Item]) -> None:
    """The longest tests first, so that pytest-xdist (which hands a worker the next test, or
    the next group whole where its first test comes, whenever it has one test left) spreads
    them over its workers and the short ones fill the gaps, instead of one long test ending
    the run alone: one test of the shared trained version (one worker trains it while the
    others start services), the tests that start services, those that train, then the rest;
    within each, the groups first (a group goes out whole, longer than a test alone)."""
    first_trained = next((item for item in items if "trained" in item.fixturenames), None)

    def rank(item: pytest.Item) -> tuple[int, bool]:
        alone = item.get_closest_marker("xdist_group") is None
        if item is first_trained:
            return 0, alone
        if item.get_closest_marker("integration"):
            return 1, alone
        return (2 if item.get_closest_marker("trains") else 3), alone

    items.sort(key=rank)

"""``python -m cxr_cli``: the ``cxr`` command (how `cxr up` starts its two processes)."""

from cxr_cli import app

app(prog_name="cxr")

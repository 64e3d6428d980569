"""Where the data files live: the catalog, the templates and the C runtime.

In a checkout they are the top-level ``replacements/`` directory beside the
package; in an installed wheel the same files ship inside the package as
``kedr_build/_replacements/`` (pyproject.toml maps one onto the other at build
time). Light on purpose (os and pathlib only): the SConstruct imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parent


def replacements_dir() -> Path:
    """``replacements/`` of the checkout, else the copy inside the installed package."""
    for candidate in (_PACKAGE.parent / "replacements", _PACKAGE / "_replacements"):
        if (candidate / "catalog").is_dir():
            return candidate
    raise FileNotFoundError(f"{_PACKAGE}: neither ../replacements nor _replacements holds "
                            "the catalog (a broken installation)")


REPLACEMENTS = replacements_dir()
CATALOG_DIR = REPLACEMENTS / "catalog"
TEMPLATES_DIR = REPLACEMENTS / "templates"
RUNTIME_DIR = REPLACEMENTS / "runtime"


def template_env() -> Any:
    """The jinja2 environment of every generated text: C, Kbuild and guest shell scripts."""
    import shlex

    import jinja2   # imported here: only the steps that render pay for it

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True,
                             autoescape=False)
    env.filters["q"] = shlex.quote     # a shell word, quoted when it needs to be
    return env

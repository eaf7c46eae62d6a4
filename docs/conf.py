"""Sphinx configuration: Furo theme, MyST Markdown pages, autodoc + napoleon for the reference.

`make docs` builds with `-W --keep-going -n`: every warning (an unresolved cross-reference
included) fails the build.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer

import underlay

project = "underlay"
author = "The underlay developers"
copyright = "The underlay developers"
release = underlay.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples/*.md"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# The docstrings are Google style; napoleon turns their sections into fields.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

autodoc_default_options = {"member-order": "bysource"}
autoclass_content = "class"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = True

# Strict: a cross-reference that resolves nowhere is a warning, and `-W` makes it an error.
# The docs are built offline, so names from other libraries cannot be linked; they render as
# code, and only they are exempt.
nitpicky = True
_EXTERNAL = (
    "sqlalchemy",
    "pydantic",
    "redis",
    "alembic",
    "asyncpg",
    "aiosqlite",
    "fastapi",
    "starlette",
    "pytest",
    "_pytest",
    "typing",
    "typing_extensions",
    "collections",
    "contextlib",
    "datetime",
    "decimal",
    "uuid",
    "enum",
    "types",
    "asyncio",
    "abc",
    "logging",
    "pathlib",
    "os",
    "json",
    "sqlite3",
    "httpx",
    "annotated_types",
)
nitpick_ignore_regex = [
    (r"py:.*", rf"({'|'.join(_EXTERNAL)})(\..*)?"),
    # Short names of third-party types as they appear in annotations and docstrings.
    (r"py:.*", r"(Async)?(Session|Engine|Connection|Result|Select|Executable|ColumnElement)"),
    (r"py:.*", r"(Mapped|MetaData|Table|Column|Index|Insert|Update|Delete|TypeDecorator)"),
    (r"py:.*", r"(BaseModel|Request|Response|Redis|RedisCluster|Config|Operations)"),
    (r"py:.*", r"(Engine|Dialect|Mapper|InstrumentedAttribute|ORMExecuteState|TypeEngine)"),
    (r"py:.*", r"(UpdateBase|Inspector|CompiledSQL|ClauseElement|FromClause|ColumnClause)"),
    (r"py:.*", r"(DeclarativeBase|MappedColumn|ORMOption|Pool|PoolProxiedConnection)"),
    (r"py:.*", r"(AsyncConnection|AsyncEngine|AsyncSession|async_sessionmaker|Row)"),
    (r"py:.*", r"(URL|ExternalType|UserDefinedType)"),
    (r"py:.*", r"_(schema|orm|sql|typing)\..*"),
    # Private names (a leading underscore) and type variables are not documented by design.
    (r"py:.*", r"(.*\.)?_\w+"),
    (r"py:.*", r"(.*\.)?_?([A-Z]|[A-Z]\w*T)"),
    # underlay.sync: the router type, and pydantic field metadata rendered in signatures.
    (r"py:.*", r"(APIRouter|dict\[str|underlay\.sync\._\w+\.TableSpec)"),
    # Returned by `retry_on_conflict`, never imported by users: described on its page.
    (r"py:class", r"(underlay\._retry\.)?(ConflictRetry|RetryAttempt)"),
]

html_theme = "furo"
html_title = f"underlay {release}"
html_static_path = ["_static"]
html_css_files = ["underlay.css"]
html_theme_options = {
    "source_repository": "https://github.com/underlay-dev/underlay/",
    "source_branch": "main",
    "source_directory": "docs/",
}
html_show_sourcelink = False
toc_object_entries_show_parents = "hide"
pygments_style = "friendly"
pygments_dark_style = "monokai"


def _documented(env: BuildEnvironment) -> dict[str, str]:
    """Map every documented Python object's full name to its object type."""
    return {name: obj.objtype for name, obj in env.get_domain("py").objects.items()}


_PRIVATE = re.compile(r"\._[a-z]\w*")


def _resolve_public_name(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    """Resolve references to underlay names by where the reference documents them.

    The code defines names in private modules (`underlay.cache._base.Cache`) and the reference
    documents them under their public path (`underlay.cache.Cache`); docstrings also refer to
    methods by bare name inside their class. Only a unique match among documented objects is
    linked, so a reference to something undocumented still fails the build.
    """
    if node.get("refdomain") != "py":
        return None
    target: str = node["reftarget"].lstrip(".~")
    objects = _documented(env)
    candidates: list[str] = []
    public = _PRIVATE.sub("", target)
    if public in objects:
        candidates = [public]
    else:
        context_class = node.get("py:class")
        context_module = node.get("py:module")
        if context_class and context_module:
            qualified = f"{context_module}.{context_class}.{target}"
            if qualified in objects:
                candidates = [qualified]
        if not candidates:
            tail = public.split(".")
            for size in range(len(tail), 0, -1):
                suffix = ".".join(tail[-size:])
                found = [name for name in objects if name.endswith("." + suffix)]
                if found:
                    candidates = found
                    break
    if len(candidates) > 1:
        shortest = min(len(name) for name in candidates)
        candidates = [name for name in candidates if len(name) == shortest]
    if len(candidates) != 1:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env,
        node["refdoc"],
        app.builder,
        node["reftype"],
        candidates[0],
        node,
        contnode,
    )


def _comment_docstring(  # noqa: PLR0917 - the signature of Sphinx's event
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    """Give a re-exported constant the `#:` comment it has where it is defined.

    Autodoc reads `#:` comments only from the module named in the directive; for
    `underlay.models.NAMING_CONVENTION` that is the package, while the comment sits in a
    private module, so autodoc would show the docstring of `dict` instead.
    """
    if what != "data":
        return
    package, _, attr = name.rpartition(".")
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith(package) or vars(module).get(attr) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
        except PycodeError:
            continue
        if ("", attr) in docs:
            lines[:] = list(docs["", attr])
            return


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the resolver that maps private module paths to the documented public names."""
    app.connect("missing-reference", _resolve_public_name)
    app.connect("autodoc-process-docstring", _comment_docstring)
    return {"parallel_read_safe": True}

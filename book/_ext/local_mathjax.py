"""Serve MathJax 3 from a local copy when one is installed.

`make book` / `make test` install the npm package mathjax@3 into _mathjax/
(never committed). When it is there, the site loads MathJax from its own
_static/ folder, so pages typeset without internet and a downloaded copy of
the site reads offline. Without it, Sphinx's default CDN address stays.
"""
from pathlib import Path

NODE_MODULES = Path("_mathjax") / "node_modules"
SCRIPT = "mathjax/es5/tex-mml-chtml.js"   # relative to node_modules and to _static


def _use_local_copy(app, config):
    node_modules = Path(app.confdir) / NODE_MODULES
    if (node_modules / SCRIPT).is_file():
        config.html_static_path = list(config.html_static_path) + [str(node_modules)]
        config.mathjax_path = SCRIPT


def setup(app):
    app.connect("config-inited", _use_local_copy, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""Put each <script> in a page's head once.

Sphinx 7.4 keeps an inline script that an extension adds with `app.add_js_file(None,
body=...)` after the builder started twice: once with the file name None, and again as ''
when it prepares writing (the two do not compare equal). sphinx-thebe adds its settings that
way (`const THEBE_JS_URL = ...`), so every page loaded with the console error "Identifier
'THEBE_JS_URL' has already been declared". tests/test_site.py fails on such errors.
"""


def _key(script):
    return (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))


def _once(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _once)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

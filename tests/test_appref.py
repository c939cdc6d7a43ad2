"""What the developer passes becomes an AppRef another process can load."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
from support import APPS_DIR, REPO_DIR

from htagweb import appref
from htagweb.appref import FQN_PATTERN, AppRefError


@pytest.fixture(autouse=True)
def apps_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(APPS_DIR))


def test_class_string_and_module_forms_resolve_alike():
    import counter

    refs = [
        appref.resolve(counter.App)[0],
        appref.resolve("counter.App")[0],
        appref.resolve("counter:App")[0],
        appref.resolve(counter)[0],
    ]
    assert {r.fqn for r in refs} == {"counter.App"}
    assert all(r.version > 0 and r.file is None for r in refs)
    assert appref.load(refs[0]) is counter.App


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ("nomodule", "not 'module.Class'"),
        ("no_such_module.App", "cannot import"),
        ("counter.Missing", "has no 'Missing'"),
        (types.ModuleType("empty"), "has no 'App'"),
        (42, "not an htag Tag class"),
        ("json.dumps", "not an htag Tag class"),
    ],
)
def test_bad_references_get_clear_errors(obj, message):
    with pytest.raises(AppRefError, match=message):
        appref.resolve(obj)


def test_class_defined_in_a_function_is_refused():
    from htag import Tag

    def make():
        class Local(Tag.div):
            pass

        return Local

    with pytest.raises(AppRefError, match="module level"):
        appref.resolve(make())


def test_app_in_a_main_script_loads_from_its_file_without_starting_a_server(tmp_path):
    """The snippet runs .run() at import time: loading it elsewhere must not serve."""
    script = tmp_path / "snippet.py"
    script.write_text(
        "from htag import Tag\nclass App(Tag.div):\n    def init(self):\n        self += 'hi'\n"
        "from htagweb import WebServer\nWebServer(App).run()\n"
    )
    ref = appref.AppRef("snippet.App", "snippet", "App", str(script), 0)
    loader = (
        f"import json, sys; sys.path.insert(0, {str(REPO_DIR)!r});"
        "from htagweb import appref; from htagweb.app import inert; inert.activate();"
        "ref = appref.AppRef.from_json(json.loads(sys.argv[1]));"
        "print(appref.load(ref).__name__, 'starlette' in sys.modules)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", loader, json.dumps(ref.to_json())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert loaded.stdout.strip() == "App False", loaded.stderr


def test_a_file_failing_on_import_leaves_no_half_run_module(tmp_path):
    script = tmp_path / "failing.py"
    script.write_text("raise RuntimeError('no db')\n")
    with pytest.raises(RuntimeError, match="no db"):  # the module's own error, as it is
        appref.load_module("htagweb_test_failing", str(script))
    assert "htagweb_test_failing" not in sys.modules


def test_find_class_tells_a_missing_name_from_something_else():
    import counter

    assert appref.find_class(counter, "counter", "App") is counter.App
    with pytest.raises(appref.MissingName, match="module 'counter' has no 'Nope'"):
        appref.find_class(counter, "counter", "Nope")
    with pytest.raises(appref.NotATagClass, match=r"counter\.INITS is not an htag Tag class"):
        appref.find_class(counter, "counter", "INITS")


def test_fqn_pattern_accepts_only_dotted_names():
    assert FQN_PATTERN.match("pkg.mod.App")
    for bad in ("App", "../x.App", "a..b", "a.b/c", "a.b c", ".a.b", "a.b\n"):
        assert not FQN_PATTERN.match(bad), bad

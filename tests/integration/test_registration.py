"""The start-up hook registers the ``coreweave`` source with nsscache's source factory (nsscache-integration.md §7).

Subprocess tests use a fresh venv with nsscache 0.49 (scripts/install-nsscache) and the project wheel installed
non-editable; the in-process tests load ``_nss_cache_coreweave_hook.py`` from the checkout and use fake modules.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
import uuid
import zipfile

import pytest

from support.venvs import REPO, clean_env, run_ok

HOOK_FILE = REPO / "_nss_cache_coreweave_hook.py"
ROOT_FILES = ("nss_cache_coreweave.pth", "nss_cache_coreweave.start", "_nss_cache_coreweave_hook.py")
LIST_SOURCES = "from nss_cache.sources import source_factory as f; print(sorted(f._source_implementations))"
LOADED = "import sys; print('nss_cache' in sys.modules, 'nss_cache_coreweave' in sys.modules)"


def outcome(result):
    return result.returncode, result.stdout, result.stderr


# --- packaging -----------------------------------------------------------------------------------------------


def test_wheel_has_the_hook_files_at_its_root(project_wheel):
    with zipfile.ZipFile(project_wheel) as wheel:
        names = set(wheel.namelist())
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        recorded = {line.split(",")[0] for line in wheel.read(record).decode().splitlines()}
        pth = wheel.read("nss_cache_coreweave.pth").decode() if "nss_cache_coreweave.pth" in names else None
        start = wheel.read("nss_cache_coreweave.start").decode() if "nss_cache_coreweave.start" in names else None
    for name in ROOT_FILES:
        assert name in names, f"{name} missing from {project_wheel.name}"
        assert name in recorded, f"{name} not in RECORD: pip uninstall would leave it behind"
    assert pth == (REPO / "nss_cache_coreweave.pth").read_text()
    assert pth.splitlines()[0].startswith("import sys; exec(\"try:\\n import _nss_cache_coreweave_hook as h;")
    assert start == "_nss_cache_coreweave_hook:install\n"


def test_install_puts_the_hook_files_in_site_packages(installed_venv):
    for name in ROOT_FILES:
        assert (installed_venv.site_packages / name).read_text() == (REPO / name).read_text()


# --- (a), (b), (e): the installed hook --------------------------------------------------------------------


def test_nsscache_sees_the_coreweave_source(installed_venv):
    assert outcome(installed_venv.run("-c", LIST_SOURCES)) == (0, "['coreweave']\n", "")
    which = LIST_SOURCES.replace(
        "print(sorted(f._source_implementations))",
        "c = f._source_implementations['coreweave']; print(c.__module__, c.__qualname__, c.name)",
    )
    assert outcome(installed_venv.run("-c", which)) == (0, "nss_cache_coreweave.source CoreWeaveSource coreweave\n", "")


def test_startup_imports_neither_nss_cache_nor_the_plugin(installed_venv):
    assert outcome(installed_venv.run("-c", LOADED)) == (0, "False False\n", "")
    # ... but the hook did run: its finder waits at the front of sys.meta_path.
    probe = "import sys; print('_nss_cache_coreweave_hook' in sys.modules, type(sys.meta_path[0]).__name__)"
    assert outcome(installed_venv.run("-c", probe)) == (0, "True _FactoryFinder\n", "")


def test_disable_env_var_leaves_nsscache_alone(installed_venv):
    env = clean_env(NSS_CACHE_COREWEAVE_DISABLE_HOOK="1")
    assert outcome(installed_venv.run("-c", LIST_SOURCES, env=env)) == (0, "[]\n", "")
    probe = "import sys; print(any(type(f).__name__ == '_FactoryFinder' for f in sys.meta_path))"
    assert outcome(installed_venv.run("-c", probe, env=env)) == (0, "False\n", "")


def test_install_after_the_factory_was_imported_registers_at_once(installed_venv):
    # -S: no site, so no .pth; add site-packages by hand, import the factory, then install() (twice).
    code = (
        "import sys; sys.path.append(sys.argv[1])\n"
        "from nss_cache.sources import source_factory as f\n"
        "import _nss_cache_coreweave_hook as h\n"
        "h.install(); h.install()\n"
        "print(sorted(f._source_implementations), [type(x).__name__ for x in sys.meta_path].count('_FactoryFinder'))"
    )
    result = installed_venv.run("-S", "-c", code, str(installed_venv.site_packages))
    assert outcome(result) == (0, "['coreweave'] 0\n", "")


# --- (c), (d): half and fully uninstalled ----------------------------------------------------------------


def test_hook_module_gone_but_pth_left_is_silent(make_venv):
    venv = make_venv()
    (venv.site_packages / "_nss_cache_coreweave_hook.py").unlink()
    assert (venv.site_packages / "nss_cache_coreweave.pth").is_file()
    assert outcome(venv.run("-c", "pass")) == (0, "", "")
    assert outcome(venv.run("-c", LOADED)) == (0, "False False\n", "")
    assert outcome(venv.run("-c", LIST_SOURCES)) == (0, "[]\n", "")


def test_pip_uninstall_removes_every_file(make_venv):
    venv = make_venv()
    run_ok([venv.python, "-m", "pip", "uninstall", "-y", "nss-cache-coreweave"], "pip uninstall")
    left = [name for name in ROOT_FILES if (venv.site_packages / name).exists()]
    left += [p.name for p in venv.site_packages.glob("nss_cache_coreweave*")]
    left += [p.name for p in venv.site_packages.glob("__pycache__/_nss_cache_coreweave_hook.*")]
    assert left == []
    assert outcome(venv.run("-c", "pass")) == (0, "", "")
    assert outcome(venv.run("-c", LIST_SOURCES)) == (0, "[]\n", "")


# --- (f) and the finder, in-process with fakes --------------------------------------------------------------


@pytest.fixture
def hook(monkeypatch):
    """A private copy of the checkout's hook module; sys.meta_path is restored afterwards."""
    if not HOOK_FILE.is_file():
        pytest.fail(f"{HOOK_FILE} is missing", pytrace=False)
    spec = importlib.util.spec_from_file_location("_nss_cache_coreweave_hook_under_test", HOOK_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # A fresh list (drops the finder of an installed copy, if any); monkeypatch puts the original back.
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if type(f).__name__ != "_FactoryFinder"])
    # Watch a unique module name, so a real nss_cache in this process plays no part.
    monkeypatch.setattr(module, "FACTORY", f"_fake_source_factory_{uuid.uuid4().hex}")
    monkeypatch.delenv("NSS_CACHE_COREWEAVE_DISABLE_HOOK", raising=False)
    return module


@pytest.fixture
def fake_source(monkeypatch):
    """Fake nss_cache_coreweave and nss_cache_coreweave.source modules; returns the fake CoreWeaveSource."""

    class CoreWeaveSource:
        name = "coreweave"

    source = types.ModuleType("nss_cache_coreweave.source")
    source.CoreWeaveSource = CoreWeaveSource
    package = types.ModuleType("nss_cache_coreweave")
    package.__path__ = []
    package.source = source
    monkeypatch.setitem(sys.modules, "nss_cache_coreweave", package)
    monkeypatch.setitem(sys.modules, "nss_cache_coreweave.source", source)
    return CoreWeaveSource


def fake_factory_module(name):
    module = types.ModuleType(name)
    module._source_implementations = {}
    module.RegisterImplementation = lambda cls: module._source_implementations.__setitem__(cls.name, cls)
    return module


FACTORY_CODE = """\
_source_implementations = {}


def RegisterImplementation(source):
    _source_implementations[source.name] = source
"""


@pytest.fixture
def factory_on_disk(hook, tmp_path, monkeypatch):
    """The module the hook watches, as a real file on sys.path; yields its name."""
    name = hook.FACTORY
    (tmp_path / f"{name}.py").write_text(FACTORY_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def finders(hook):
    return [f for f in sys.meta_path if isinstance(f, hook._FactoryFinder)]


def test_install_registers_at_once_when_factory_already_imported(hook, fake_source, monkeypatch):
    factory = fake_factory_module(hook.FACTORY)
    monkeypatch.setitem(sys.modules, hook.FACTORY, factory)
    before = list(sys.meta_path)
    hook.install()
    hook.install()
    assert factory._source_implementations == {"coreweave": fake_source}
    assert sys.meta_path == before


def test_install_is_idempotent_and_adds_one_finder_first(hook):
    hook.install()
    hook.install()
    assert len(finders(hook)) == 1
    assert isinstance(sys.meta_path[0], hook._FactoryFinder)


def test_finder_ignores_other_modules(hook):
    hook.install()
    (finder,) = finders(hook)
    assert finder.find_spec("json") is None
    assert finder.find_spec("nss_cache.sources.source") is None
    assert finders(hook) == [finder]


def test_factory_import_registers_and_removes_the_finder(hook, fake_source, factory_on_disk):
    hook.install()
    factory = importlib.import_module(factory_on_disk)
    assert factory._source_implementations == {"coreweave": fake_source}
    assert finders(hook) == []
    assert "exec_module" not in vars(factory.__loader__)  # the wrapper was removed from the loader


def test_broken_plugin_logs_a_warning_and_the_factory_still_loads(hook, factory_on_disk, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "nss_cache_coreweave", None)  # `import nss_cache_coreweave` -> ImportError
    hook.install()
    with caplog.at_level(logging.WARNING, logger="nss_cache_coreweave"):
        factory = importlib.import_module(factory_on_disk)
    assert factory._source_implementations == {}
    assert [(r.name, r.levelname) for r in caplog.records] == [("nss_cache_coreweave", "WARNING")]
    assert caplog.records[0].getMessage().startswith("cannot register the coreweave nsscache source: ")
    assert caplog.records[0].exc_info is not None


def test_disable_env_var(hook, fake_source, monkeypatch):
    monkeypatch.setenv("NSS_CACHE_COREWEAVE_DISABLE_HOOK", "1")
    hook.install()
    assert finders(hook) == []
    factory = fake_factory_module(hook.FACTORY)
    monkeypatch.setitem(sys.modules, hook.FACTORY, factory)
    hook.install()
    assert factory._source_implementations == {}


def test_install_never_raises(hook, monkeypatch):
    monkeypatch.setattr(sys, "meta_path", ())  # no insert(): install() must swallow the error
    hook.install()
    assert sys.meta_path == ()

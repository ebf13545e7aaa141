"""Register the ``coreweave`` source with nsscache when nsscache loads its source factory.

nsscache has no plugin mechanism: ``nss_cache.sources.source_factory`` hard-codes its built-in sources.
``nss_cache_coreweave.pth`` (or ``nss_cache_coreweave.start``, PEP 829) calls :func:`install` at interpreter
start-up.  It costs one small import: nothing else is imported until the factory itself is imported, and then
``nss_cache_coreweave.source`` is imported and ``CoreWeaveSource`` registered right after the factory's own
code has run.

Stdlib only; :func:`install` is idempotent and never raises.  Set ``NSS_CACHE_COREWEAVE_DISABLE_HOOK=1`` to
turn it off.
"""

import os
import sys

__all__ = ["install"]

FACTORY = "nss_cache.sources.source_factory"
DISABLE_ENV = "NSS_CACHE_COREWEAVE_DISABLE_HOOK"


def install():
    """Arrange for ``CoreWeaveSource`` to be registered with nsscache's source factory; never raises."""
    try:
        if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
            return
        factory = sys.modules.get(FACTORY)
        if factory is not None:
            _register(factory)
        elif not any(isinstance(finder, _FactoryFinder) for finder in sys.meta_path):
            sys.meta_path.insert(0, _FactoryFinder())
    except Exception:  # never break interpreter start-up
        pass


def _register(factory):
    """Register CoreWeaveSource with the (fully executed) factory module; log a WARNING on failure."""
    try:
        from nss_cache_coreweave import source

        factory.RegisterImplementation(source.CoreWeaveSource)
    except Exception as e:
        _warn("cannot register the coreweave nsscache source: %s: %s", type(e).__name__, e, exc_info=True)


def _warn(message, *args, **kwargs):
    import logging  # only on failure: keep start-up cheap

    logging.getLogger("nss_cache_coreweave").warning(message, *args, **kwargs)


class _FactoryFinder:
    """A meta path finder that only watches for the source factory, then steps aside."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != FACTORY:
            return None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        original = getattr(loader, "exec_module", None)
        if original is None:
            return spec

        def exec_module(module):
            # Undo the wrapping first: one loader may serve other modules (e.g. zipimport).
            try:
                del loader.exec_module
            except AttributeError:
                pass
            original(module)
            _register(module)

        try:
            loader.exec_module = exec_module
        except (AttributeError, TypeError):  # a loader that forbids new attributes: leave the import alone
            _warn("cannot register the coreweave nsscache source: cannot wrap loader %r", loader)
        return spec

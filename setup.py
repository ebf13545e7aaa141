"""setuptools shim: ship the start-up hook files at the wheel root (metadata lives in setup.cfg)."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

# Read by site.py at start-up: the .pth's guarded import line, or the PEP 829 .start entry point (Python >= 3.15).
ROOT_FILES = ("nss_cache_coreweave.pth", "nss_cache_coreweave.start")


class BuildPyWithStartupFiles(build_py):
    """build_py that also copies ROOT_FILES into build_lib, i.e. the root of the wheel (site-packages)."""

    def run(self):
        super().run()
        for name in ROOT_FILES:
            self.copy_file(name, os.path.join(self.build_lib, name), preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        # Declared as outputs for tools that ask (install --record, editable builds); the wheel's RECORD,
        # which `pip uninstall` follows, lists every file in build_lib.
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, name) for name in ROOT_FILES]

    def get_source_files(self):
        # Included in the sdist, so a wheel built from the sdist has them too.
        return super().get_source_files() + list(ROOT_FILES)


setup(cmdclass={"build_py": BuildPyWithStartupFiles})

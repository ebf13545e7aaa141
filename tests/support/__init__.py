"""Helpers for the tests, i.e. everything under tests/ that is not a test module or a conftest.py:
the fake CoreWeave IAM (fakeiam) and the scim2-server harness; a login node in a temporary
directory (node), the project's wheel and venvs (venvs) and a login node in a private mount
namespace (loginnode); the packaging tests' host guard (host), sshd configuration check
(sshd_check) and private systemd (private_systemd); the Slurm accounting stack (slurm_harness)
and the slurm-sync site around it (slurm_site); a real nginx on loopback (nginx) and a publisher
with its signed bundle for nodes in mirror mode (fleet); the fault table's vocabulary (faults); and, for
the unit tests, a scripted HTTP transport (scripted_http) and fresh SSH keys (keys). pytest puts
tests/ on sys.path (``pythonpath`` in setup.cfg's [tool:pytest]), so tests import them as
``from support.fakeiam import FakeIAM``; a script run by hand needs ``PYTHONPATH=tests``.
Fixtures are not defined here: they live in the conftest.py nearest to the tests that use them.
"""

"""Package layout (everything else is in pyproject.toml).

One import root: the wheel installs `slinfer` only. The top-level folders `services/` and `sim/`
are mapped to `slinfer.services` and `slinfer.sim`; `bench/` and `tests/` are not installed.
"""

from setuptools import find_packages, setup

MAPPED = {"slinfer.services": "services", "slinfer.sim": "sim"}

packages = find_packages(include=["slinfer", "slinfer.*"])
for name, folder in MAPPED.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=MAPPED)

"""Package layout: `sim/` and `hardware/` live at the top level of the repository (as the design
asks) but install as `roboreward.sim` and `roboreward.hardware`, so they never claim the generic
import names `sim` and `hardware` in a user's environment. pyproject.toml cannot express a
renamed package tree with its subpackages, hence this file; all metadata stays in pyproject.toml."""
from setuptools import find_packages, setup

packages = find_packages(include=["roboreward", "roboreward.*"])
package_dir = {"roboreward": "roboreward"}
for top in ("sim", "hardware"):
    packages.append(f"roboreward.{top}")
    packages += [f"roboreward.{top}.{sub}" for sub in find_packages(top)]
    package_dir[f"roboreward.{top}"] = top

setup(packages=packages, package_dir=package_dir)

"""Maps the repository's top-level folders to the `homeflex.*` import names.

PyPI already has packages called `edge`, `cloud` and `agents`; installing them under `homeflex.`
keeps the folders at the top of the repository and the import names our own.
"""

from setuptools import find_packages, setup

FOLDERS = {
    "common": "homeflex",
    "edge": "homeflex.edge",
    "cloud": "homeflex.cloud",
    "agents": "homeflex.agents",
    "pki": "homeflex.pki",
}

packages = []
package_dir = {}
for folder, name in FOLDERS.items():
    packages.append(name)
    package_dir[name] = folder
    for sub in find_packages(folder):
        packages.append(f"{name}.{sub}")
        package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir)

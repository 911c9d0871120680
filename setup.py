"""Build hook: the embedded data set travels with the installed package.

``data/bandai.npz`` is the one copy in the repository (next to its README). A regular build
(``pip install .``, a wheel, an sdist) copies it into the built package as ``cagelib/_data/bandai.npz``;
an editable install reads it from ``data/`` directly (``cagelib.data.bandai.embedded_path``).
Everything else is configured in pyproject.toml.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

EMBEDDED = Path(__file__).resolve().parent / "data" / "bandai.npz"


class build_py_with_embedded_data(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # the editable package reads data/bandai.npz in place
        if not EMBEDDED.is_file():
            raise FileNotFoundError(f"{EMBEDDED}: the embedded data set is missing; the package would carry no data")
        target = Path(self.build_lib) / "cagelib" / "_data" / EMBEDDED.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(EMBEDDED, target)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs.append(str(Path(self.build_lib) / "cagelib" / "_data" / EMBEDDED.name))
        return outputs


setup(cmdclass={"build_py": build_py_with_embedded_data})

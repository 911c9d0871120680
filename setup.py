"""Build hook: the embedded data set and the notebooks travel with the installed package.

``data/bandai.npz`` is the one copy in the repository (next to its README). A regular build
(``pip install .``, a wheel, an sdist) copies it into the built package as ``cagelib/_data/bandai.npz``;
an editable install reads it from ``data/`` directly (``cagelib.data.bandai.embedded_path``).
Likewise ``notebooks/*.ipynb`` are copied to ``cagelib/_notebooks/``, where ``python -m cagelib reproduce``
finds them in an installed package (``cagelib.lab.reproduce.notebooks_dir``); an editable install runs the
repository's ``notebooks/``. (A build from an sdist has them only if the sdist carries ``notebooks/``;
without them the build warns and reproduce says how to get them.)
Everything else is configured in pyproject.toml.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
EMBEDDED = HERE / "data" / "bandai.npz"
NOTEBOOKS = HERE / "notebooks"


def _notebooks() -> list:
    return sorted(NOTEBOOKS.glob("*.ipynb")) if NOTEBOOKS.is_dir() else []


class build_py_with_embedded_data(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # the editable package reads data/bandai.npz and notebooks/ in place
        if not EMBEDDED.is_file():
            raise FileNotFoundError(f"{EMBEDDED}: the embedded data set is missing; the package would carry no data")
        target = Path(self.build_lib) / "cagelib" / "_data" / EMBEDDED.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(EMBEDDED, target)
        notebooks = _notebooks()
        if not notebooks:
            self.warn(f"{NOTEBOOKS}: no notebooks to package; `python -m cagelib reproduce` will need a checkout")
        for notebook in notebooks:
            target = Path(self.build_lib) / "cagelib" / "_notebooks" / notebook.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(notebook, target)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs.append(str(Path(self.build_lib) / "cagelib" / "_data" / EMBEDDED.name))
            outputs += [str(Path(self.build_lib) / "cagelib" / "_notebooks" / n.name) for n in _notebooks()]
        return outputs


setup(cmdclass={"build_py": build_py_with_embedded_data})

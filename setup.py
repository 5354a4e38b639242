"""Ship the top-level sweeps/, analysis/ and workers/ folders inside the wheel.

They live at the repository's top level because operators read and edit them there; a
non-editable install finds them as package data under qgen_sweep/_data/ (see qgen_sweep.resources).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_DIRS = ("sweeps", "analysis", "workers")


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        root = Path(__file__).parent
        target = Path(self.build_lib) / "qgen_sweep" / "_data"
        for name in DATA_DIRS:
            source = root / name
            if source.is_dir():
                shutil.copytree(source, target / name, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildPyWithData})

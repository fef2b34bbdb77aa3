"""Only here to install difflora-autoload.pth into site-packages (pyproject.toml holds the rest)."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "difflora-autoload.pth"


class BuildPyWithAutoload(build_py):
    def run(self):
        super().run()
        self.copy_file(os.path.join("src", PTH), os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, PTH)]


setup(cmdclass={"build_py": BuildPyWithAutoload})

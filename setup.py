"""Build the C core (nfos._core). Everything else is declared in pyproject.toml."""

from glob import glob

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "nfos._core",
            sources=sorted(glob("src/nfos/_core/*.c")),
            include_dirs=["src/nfos/_core"],
            depends=sorted(glob("src/nfos/_core/*.h") + glob("src/nfos/_core/*.def")),
            # an undeclared call is an error: a file reaches only what the headers it
            # includes declare (the layers: src/nfos/_core/layers.txt)
            extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wno-unused-function",
                                "-Werror=implicit-function-declaration"],
        )
    ]
)

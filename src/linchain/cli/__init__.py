"""The ``linchain`` command line: thin wrappers over the library."""

__all__: list[str] = []

"""``python -m terra.cli``: the ``terra`` command, as ``python -m terra``."""

from . import main

if __name__ == "__main__":
    main()

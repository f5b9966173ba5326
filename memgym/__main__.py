"""``python -m memgym …``: the ``memgym`` command (e.g. as the program of ``torchrun`` or
``accelerate launch``)."""

from memgym.cli import main

if __name__ == "__main__":
    main()

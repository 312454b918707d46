"""``python -m fscale_tui`` is the same as the ``fscale`` command."""

from fscale_tui.cli import main

if __name__ == "__main__":
    main()

"""`python -m zsclip`: the same as the `zsclip` command."""

from .cli import main

main()

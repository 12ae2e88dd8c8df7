"""`python -m zsclip`: the same as the `zsclip` command."""

from zsclip.cli import main

main()

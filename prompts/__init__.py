"""Template sets and class-name lists, shipped as package data (zsclip.prompt_files)."""

"""What every feature stands on, importing nothing heavy: errors a user can act on (`errors`) and their wording
(`wording`), progress on stderr (`progress`), whole-file writes (`atomic`), one writer per folder (`locks`), places
results go (`paths`), reading limits (`limits`), shared defaults (`defaults`), the user's text files (`textfiles`)
and headless matplotlib (`plots`)."""

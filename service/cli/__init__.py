"""The command-line face: `longdoc` and its subcommands."""

"""Subcommands of the `mdesc` command, one module per study (see mdesc/cli.py)."""

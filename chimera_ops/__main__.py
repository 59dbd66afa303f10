"""`python -m chimera_ops` runs the CLI."""

from chimera_ops.cli.main import main

main()

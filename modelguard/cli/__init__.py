"""The click CLI: thin commands, one module per command group."""

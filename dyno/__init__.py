"""dyno: the command-line entry point that maps `dyno <sub>` to each package's own command."""

"""`python -m mmbench.cli ...` runs the `mmbench` command."""

from mmbench.cli import main

main()

"""`python -m cli` runs the fmplan command."""
from cli.main import main

main()

"""`python -m fedcare`: the same command as `fedcare`."""

from fedcare.cli import main

main()

"""`python -m fedcare`: the same command as `fedcare`."""

from fedcare.interfaces.cli import main

main()

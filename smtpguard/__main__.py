"""`python -m smtpguard`: the same command as `smtpguard`."""

from smtpguard.cli import main

main()

from smtpguard.cli import main

main()

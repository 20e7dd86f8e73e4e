from ivr.cli import main

main()

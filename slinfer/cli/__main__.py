from slinfer.cli.main import main

main()

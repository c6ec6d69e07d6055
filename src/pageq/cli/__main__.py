from pageq.cli.main import main

main()

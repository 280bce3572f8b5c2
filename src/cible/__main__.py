from cible.cli.main import main

main()

from rivetkit.cli import main

main()

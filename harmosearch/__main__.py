from harmosearch.cli import main

main()

from dt_eval.cli import main

main()

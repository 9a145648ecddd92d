from dt_eval.serving.hfserver.app import main

if __name__ == "__main__":
    main()

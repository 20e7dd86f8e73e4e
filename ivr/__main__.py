from ivr.cli import main

if __name__ == "__main__":  # a spawned worker process (speech decoding) imports this module as __mp_main__
    main()

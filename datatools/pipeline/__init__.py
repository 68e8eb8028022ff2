"""The stage order: run a step, print its summary, decide what the run's exit says (steps),
the whole pipeline in one command (prepare) and the demo."""

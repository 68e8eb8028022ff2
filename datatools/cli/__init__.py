"""The command line (Typer only, no rules): the app and its command wrapper, the options, doctor."""

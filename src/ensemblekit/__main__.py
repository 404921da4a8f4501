"""``python -m ensemblekit`` runs the command line."""

from .cli import main

main()

"""``python -m gadms_cli`` runs the CLI (this is what ``accelerate launch -m gadms_cli`` uses)."""

from gadms_cli.cli import main

if __name__ == "__main__":
    main()

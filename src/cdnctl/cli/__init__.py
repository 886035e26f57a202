"""The command line (`cdnctl`): thin typer modules that parse, call a package, print."""

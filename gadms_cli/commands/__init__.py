"""One module per CLI command; each is a thin layer that parses, calls the library and prints."""

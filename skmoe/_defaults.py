"""Package-wide defaults with no imports, so the command line can name them without torch."""

#: The model every entry point uses unless told otherwise.
DEFAULT_MODEL = "nomic-ai/nomic-embed-text-v2-moe"

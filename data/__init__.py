"""Data preparation: converters for OntoNotes 5.0 and CoNLL-2000, long-sentence splitting, and the embedded
default data (Brown corpus text with spaCy silver labels) and encoder (MiniLM) for users who bring neither."""

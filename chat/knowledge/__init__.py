"""Knowledge bases: documents split into chunks, embedded, searched by meaning and by
words, and cited in replies (docs/architecture.md, "Knowledge bases")."""

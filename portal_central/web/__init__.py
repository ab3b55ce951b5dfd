"""Server-rendered pages (HTMX) of the central portal."""

"""What the central and the site portal share on the web: rendering pages and fragments, the
security headers, the Host and cross-site checks, request bodies read in memory (``uploads``),
the databases' column types (``sqltypes``), and the templates and static files both use.

Each portal keeps its own templates in its package (``portal_central/templates``,
``portal_site/templates``), named ``central/...`` and ``site/...``; the shared ones
(``base.html``, ``_macros.html``, the error pages) and every static file live here.
"""

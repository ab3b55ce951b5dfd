"""The central portal: accounts, the algorithm registry, jobs, and the site connections."""

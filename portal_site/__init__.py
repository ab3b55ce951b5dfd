"""The site portal: a local browser UI and a worker that answers central on local data."""

"""Jobs: their states, their creation from the wizard or the API, and their runs."""

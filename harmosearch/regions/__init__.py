"""Region proposals (windows, segments, pixel segments, user boxes) and their pooling."""

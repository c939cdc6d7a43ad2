"""What crosses between processes: length-prefixed JSON frames, and the messages a page
sends. Imported on every side, so it imports nothing heavy."""

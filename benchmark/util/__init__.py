"""Small utilities with one implementation each: atomic files, paths and default folders, progress."""

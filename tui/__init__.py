"""tuneplan.tui"""

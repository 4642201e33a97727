"""tuneplan.executor"""

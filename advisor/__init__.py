"""tuneplan.advisor"""

"""igsearch.policy"""

"""igsearch.algo"""

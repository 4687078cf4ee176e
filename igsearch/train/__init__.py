"""igsearch.train"""

"""igsearch.data"""

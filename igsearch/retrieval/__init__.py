"""igsearch.retrieval"""

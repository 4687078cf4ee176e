"""igsearch.ig"""

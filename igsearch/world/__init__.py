"""igsearch.world"""

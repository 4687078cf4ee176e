"""igsearch.scoring"""

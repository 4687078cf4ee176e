"""igsearch.rollout"""

"""clip_match.runtime"""

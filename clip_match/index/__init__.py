"""clip_match.index"""

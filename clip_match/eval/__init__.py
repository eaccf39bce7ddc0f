"""clip_match.eval"""

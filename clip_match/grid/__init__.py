"""clip_match.grid"""

"""clip_match.text"""
